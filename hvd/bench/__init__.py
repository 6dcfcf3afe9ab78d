"""Benchmark prompt suites built from real, locally installed data (see hvd.bench.suites)."""
