"""The HTML report: reads the files verify and the benchmarks wrote (never runs a kernel) and renders one page."""
