"""Real LLM layer shapes, (out_features, in_features), shared by the large tier and the benchmarks.

Tile-boundary bugs only show past ~64k elements, so every verification run examines
the LARGE_TIER at least once.
"""
LAYER_SHAPES = {
    "llama3-8b.q_proj": (4096, 4096),
    "llama3-8b.k_proj": (1024, 4096),
    "llama3-8b.gate_proj": (14336, 4096),
    "llama3-8b.down_proj": (4096, 14336),
    "llama3-70b.gate_proj": (28672, 8192),
    "llama3-70b.down_proj": (8192, 28672),
    # Falcon-7B's fused QKV: in_features 4544 = 35 * 128 + 64, so group size 128 leaves a ragged last group.
    "falcon-7b.query_key_value": (4672, 4544),
}

LARGE_TIER = ["llama3-8b.q_proj", "llama3-8b.gate_proj", "llama3-8b.down_proj", "falcon-7b.query_key_value"]
