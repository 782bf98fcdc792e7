"""Enforcement sessions (JL-12, JL-15, JL-16): events, written explanations and the continuity verdict."""
