"""Benchmarks: named grids of real layer shapes (built in a candidate's domain), one timer, one work model (bytes
and FLOPs), the parquet store and the device peaks the rates are measured against."""
__all__ = ["baselines", "cli", "closing", "devices", "domain_grid", "grids", "honesty", "load", "runner", "seed",
           "store", "timing", "two_phase", "work"]
