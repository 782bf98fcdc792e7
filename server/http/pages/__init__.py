"""Server-rendered pages: the admin console, the evidence workspace and the public pages."""
