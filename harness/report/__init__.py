"""The HTML report: reads the files verify and the benchmarks wrote (never runs a kernel) and renders one page."""
__all__ = ["accuracy", "charts", "cli", "comparison", "fields", "fmt", "inputs", "memory", "page", "performance",
           "verdicts", "verification"]
