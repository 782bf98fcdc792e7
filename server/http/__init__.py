"""HTTP: the JSON API, the pages, roles, OpenAPI and the error shape."""
