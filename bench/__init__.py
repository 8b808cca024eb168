"""Benchmarks: each module measures figures against their goals and a same-run baseline."""
