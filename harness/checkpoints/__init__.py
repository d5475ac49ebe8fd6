"""Real weights: INT4 layers read from safetensors checkpoints, and round-to-nearest on a real model's layers."""
