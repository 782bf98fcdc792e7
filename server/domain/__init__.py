"""Server domain: the rules of zfjl, free of HTTP, threads and request parsing."""
