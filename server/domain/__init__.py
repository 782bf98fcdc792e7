"""The domain: rules over a SQLAlchemy session, one package per area.

No Flask, no threads, no request parsing: the HTTP views, the ingest handlers and the CLI share these rules.
"""
