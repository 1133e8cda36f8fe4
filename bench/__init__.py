"""Benchmarks: each prints its figures; ``python -m bench`` (``make bench``) runs them all and writes a summary."""
