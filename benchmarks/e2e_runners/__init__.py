"""Rows of benchmarks/e2e.py: one module per family, each with ``ROWS`` (see the runner interface there)."""
