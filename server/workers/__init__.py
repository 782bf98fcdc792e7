"""Background loops of the server process, each owned by the runner."""
