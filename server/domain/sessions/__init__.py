"""Enforcement sessions: events, markers, written explanations and the JL-16 continuity verdict."""
