"""Server-rendered pages: the admin console, the mobile credential page and the public verify page."""
