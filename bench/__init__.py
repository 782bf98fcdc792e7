"""Benchmarks and demos (not part of the installed packages)."""
