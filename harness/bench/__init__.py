"""Benchmarks: named grids of real layer shapes, one timer, one work model (bytes and FLOPs), the parquet store
and the device peaks the rates are measured against."""
__all__ = ["baselines", "cli", "devices", "grids", "runner", "seed", "store", "timing", "work"]
