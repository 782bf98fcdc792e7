"""zfjl server: the app factory is in ``server.app``; see docs/architecture.md for the layout."""
