"""Evidence: stored segments, their commit and chain, queries and the integrity scrub (JL-6, JL-23)."""
