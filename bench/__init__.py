"""Benchmarks: run with `python -m bench.<name>`; they print figures, they are not tests."""
