"""Benchmarks: the API and the token-health sweep against their ceilings (see BENCHMARKS.md)."""
