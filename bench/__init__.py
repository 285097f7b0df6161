"""Benchmarks: each row compares Tsumugi with a named baseline in the same run (``python -m bench``)."""
