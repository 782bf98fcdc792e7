"""The HTTP side of the server: JSON API blueprints and server-rendered pages."""
