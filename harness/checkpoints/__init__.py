"""Real weights: INT4 layers read from safetensors checkpoints, and round-to-nearest on a real model's layers."""
__all__ = ["cli", "real_weights", "safetensors_layer"]
