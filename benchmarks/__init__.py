"""Cost harness support: the seeds' own operators and the measurement worker (see scripts/benchmark_heads.py)."""
