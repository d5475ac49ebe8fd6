"""The judge: cases, strategies, the tolerance model, the properties, and the engine that runs them on a TARGET.

Never imports kernels/: what it judges comes in as a callable (verify.targets loads a TARGET string)."""
__all__ = ["cases", "child", "cli", "dequantizer", "designs", "domain", "engine", "executor", "judgement", "layouts",
           "main", "plan", "printing", "probes", "properties", "record", "repro", "run", "strategies", "targets",
           "tolerance", "values"]
