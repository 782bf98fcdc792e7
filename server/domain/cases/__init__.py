"""Cases: the case file and its events in stage order (JL-7 – JL-11)."""
