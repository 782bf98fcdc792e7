"""Server-rendered pages: the admin console, the evidence workspace, the mobile credential page and the
public verify page."""
