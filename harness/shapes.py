"""Real LLM layer shapes: the one list the large tier, the benchmark grids, the GPU table and the report use.

MODELS holds every INT4 + LoRA linear layer of a decoder block, (out_features, in_features), from each
model's config.json: Llama 3 has 8 KV heads of 128 (k, v: 1024 out); Falcon-7B a fused QKV of 71 + 2 heads
of 64. SERVED holds what a server runs as one GEMM instead: vLLM merges q, k, v (QKVParallelLinear) and
gate, up (MergedColumnParallelLinear), and serves LoRA on the LM head too (out_features = the vocabulary:
128256 in Llama 3, 65024 in Falcon); only these reach out_features >= 32768, where row offsets pass 2**15.
"""
MODELS = {  # model -> (decoder blocks, {projection: (out_features, in_features)})
    "llama3-8b": (32, {"q_proj": (4096, 4096), "k_proj": (1024, 4096), "v_proj": (1024, 4096),
                       "o_proj": (4096, 4096), "gate_proj": (14336, 4096), "up_proj": (14336, 4096),
                       "down_proj": (4096, 14336)}),
    "llama3-70b": (80, {"q_proj": (8192, 8192), "k_proj": (1024, 8192), "v_proj": (1024, 8192),
                        "o_proj": (8192, 8192), "gate_proj": (28672, 8192), "up_proj": (28672, 8192),
                        "down_proj": (8192, 28672)}),
    # Falcon-7B's fused QKV: in_features 4544 = 35 * 128 + 64, so group size 128 leaves a ragged last group.
    "falcon-7b": (32, {"query_key_value": (4672, 4544), "dense": (4544, 4544), "dense_h_to_4h": (18176, 4544),
                       "dense_4h_to_h": (4544, 18176)}),
}

LAYER_SHAPES = {f"{model}.{name}": shape for model, (_, layers) in MODELS.items() for name, shape in layers.items()}

SERVED = {  # model -> {merged layer or LM head: (out_features, in_features)}
    "llama3-8b": {"qkv_proj": (4096 + 2 * 1024, 4096), "gate_up_proj": (2 * 14336, 4096), "lm_head": (128256, 4096)},
    "llama3-70b": {"qkv_proj": (8192 + 2 * 1024, 8192), "gate_up_proj": (2 * 28672, 8192),
                   "lm_head": (128256, 8192)},
    "falcon-7b": {"lm_head": (65024, 4544)},
}
SERVED_SHAPES = {f"{model}.{name}": shape for model, layers in SERVED.items() for name, shape in layers.items()}

# The large tier judges a wide layer on its first WIDE_ROWS rows: past the 2**15 and 2**16 row offsets where a
# 16-bit offset wraps, at half of Llama 3's LM head's cost.
WIDE_ROWS = 2 ** 16 + 64


def judged_shape(name):
    """(out_features, in_features) of layer `name` (LAYER_SHAPES or SERVED_SHAPES), its first WIDE_ROWS rows at most."""
    out_features, in_features = {**LAYER_SHAPES, **SERVED_SHAPES}[name]
    return min(out_features, WIDE_ROWS), in_features

# Tile-boundary and split-K bugs only show past ~64k elements, so every verification run examines these.
LARGE_TIER = ["llama3-8b.q_proj", "llama3-8b.gate_proj", "llama3-8b.down_proj", "falcon-7b.query_key_value",
              "llama3-8b.lm_head"]

# The layers the GPU table of docs/gpu.md times (out x in: 4096x4096, 1024x4096, 14336x4096, 4096x14336).
GPU_TABLE = ["llama3-8b.q_proj", "llama3-8b.k_proj", "llama3-8b.gate_proj", "llama3-8b.down_proj"]
