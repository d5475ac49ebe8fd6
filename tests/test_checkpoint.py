"""harness/checkpoint.py: small safetensors files in each format, written and loaded back."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from safetensors.torch import save_file

from int4_lora_harness.verify.cases import TORCH_DTYPES
from int4_lora_harness.checkpoints.safetensors_layer import load_layer
from int4_lora_harness.verify.strategies import DTYPES
from int4_lora_harness.reference import linear_exact
from int4_lora_harness.reference.formats import Canonical
from test_formats import gptq_checkpoints, gptq_weight, quantized_layers, to_format, valid, weights

PREFIX = "model.layers.0.mlp.down_proj"
FILE_FORMATS = {"compressed-tensors": "compressed-tensors", "gptq-v1": "gptq", "gptq-v2": "gptq_v2", "awq": "awq"}
SCALE_NAMES = {"weight_scale", "scales"}


def write(directory, layers):
    """{prefix: {name: np.ndarray | torch.Tensor}} -> path of a .safetensors file holding them all."""
    path = str(directory / "model.safetensors")
    save_file({f"{prefix}.{name}": torch.as_tensor(t).contiguous()
               for prefix, tensors in layers.items() for name, t in tensors.items()}, path)
    return path


def with_scales_in(c, dtype):
    """c with its scales rounded to `dtype`, so that the file holds them exactly."""
    return c._replace(scales=torch.from_numpy(np.asarray(c.scales, np.float64)).to(dtype).double().numpy())


def as_torch(tensors, dtype):
    return {name: torch.from_numpy(np.ascontiguousarray(t)).to(dtype) if name in SCALE_NAMES else torch.from_numpy(t)
            for name, t in tensors.items()}


def layer_weights(layer):
    """float64 [out, in] in the original column order from a loaded Layer."""
    z = None if layer.zero_points is None else layer.zero_points.numpy()
    perm = None if layer.perm is None else layer.perm.numpy()
    return weights(Canonical(layer.packed_weights.numpy(), layer.scales.double().numpy(), z, layer.group_size, perm))


@given(quantized_layers(), st.sampled_from(sorted(FILE_FORMATS)), st.sampled_from(DTYPES),
       st.booleans())
def test_each_format_written_to_safetensors_loads_back_to_the_same_weights(tmp_path_factory, c, fmt, dtype, bias):
    c = with_scales_in(c, TORCH_DTYPES[dtype])
    if fmt == "gptq-v1" and c.zero_points is not None and (c.zero_points == -8).any():
        c = c._replace(zero_points=np.maximum(c.zero_points, -7))  # v1 cannot store a true zero of 0
    tensors = as_torch(to_format(c, fmt), TORCH_DTYPES[dtype])
    if bias:
        tensors["bias"] = torch.arange(c.packed.shape[0], dtype=TORCH_DTYPES[dtype])
    decoy = as_torch(valid("awq"), torch.float16)  # another layer whose name starts the same way
    path = write(tmp_path_factory.mktemp("ckpt"), {PREFIX: tensors, PREFIX + "_decoy": decoy})
    layer = load_layer(path, PREFIX, fmt="gptq_v2" if fmt == "gptq-v2" else None, group_size=c.group_size)
    assert layer.fmt == FILE_FORMATS[fmt]
    assert layer.packed_weights.dtype == torch.uint8 and layer.scales.dtype == TORCH_DTYPES[dtype]
    assert np.array_equal(layer_weights(layer), weights(c))
    assert (layer.bias is None) != bias


@given(gptq_checkpoints())
def test_an_act_order_gptq_layer_loads_with_the_perm_that_reproduces_its_linear(tmp_path_factory, t):
    path = write(tmp_path_factory.mktemp("ckpt"), {PREFIX: t})
    layer = load_layer(path, PREFIX)
    x = np.arange(2 * len(t["g_idx"]), dtype=np.float64).reshape(2, -1) % 7 - 3
    x_canonical = x if layer.perm is None else x[:, layer.perm.numpy()]
    z = None if layer.zero_points is None else layer.zero_points.numpy()
    y = linear_exact(x_canonical, layer.packed_weights.numpy(), layer.scales.numpy(), z, layer.group_size,
                     None, None, np.full(2, -1), 0.0, None)
    assert np.array_equal(y, x @ gptq_weight(**t, version="v1").T)


# --- refusals ---------------------------------------------------------------------------------

def checkpoint(tmp_path, fmt="gptq-v1", **changes):
    """A file with one valid layer of `fmt` at PREFIX, tensors replaced or removed (None) by `changes`."""
    tensors = {**as_torch(valid(fmt), torch.float16), **changes}
    return write(tmp_path, {PREFIX: {k: v for k, v in tensors.items() if v is not None}})


def test_a_missing_prefix_is_refused_with_the_layers_that_are_there(tmp_path):
    with pytest.raises(ValueError, match="no tensors under prefix 'model.layers.1'.*model.layers.0.mlp.down_proj"):
        load_layer(checkpoint(tmp_path), "model.layers.1")
    with pytest.raises(ValueError, match="no tensors under prefix"):
        load_layer(checkpoint(tmp_path), "model.layers.0.mlp.down")  # a prefix of a name, not a layer


def test_a_uint8_or_fp8_weight_with_a_weight_scale_is_not_taken_for_int4(tmp_path):
    for weight in (torch.zeros(16, 16, dtype=torch.uint8), torch.zeros(16, 32, dtype=torch.float8_e4m3fn)):
        path = write(tmp_path, {PREFIX: {"weight": weight, "weight_scale": torch.ones(16, 1)}})
        with pytest.raises(ValueError, match="not an INT4-packed one"):
            load_layer(path, PREFIX)
        with pytest.raises(ValueError, match="missing.*weight_packed"):
            load_layer(path, PREFIX, fmt="compressed-tensors")


def test_an_unquantized_weight_is_refused(tmp_path):
    path = write(tmp_path, {PREFIX: {"weight": torch.zeros(4, 8, dtype=torch.float16)}})
    with pytest.raises(ValueError, match="unquantized"):
        load_layer(path, PREFIX)


def test_packed_tensors_of_the_wrong_dtype_are_refused(tmp_path):
    words = as_torch(valid("compressed-tensors"), torch.float16)["weight_packed"]
    with pytest.raises(ValueError, match="weight_packed is torch.uint8"):
        load_layer(checkpoint(tmp_path, "compressed-tensors", weight_packed=words.view(torch.uint8)), PREFIX,
                   group_size=8)
    with pytest.raises(ValueError, match="qweight is torch.int64"):
        load_layer(checkpoint(tmp_path, "awq", qweight=torch.zeros(32, 2, dtype=torch.int64)), PREFIX, group_size=8)


def test_incomplete_or_unknown_tensor_sets_are_refused(tmp_path):
    with pytest.raises(ValueError, match="match no INT4 format"):
        load_layer(checkpoint(tmp_path, qzeros=None), PREFIX)
    with pytest.raises(ValueError, match="match no INT4 format"):
        load_layer(checkpoint(tmp_path, "compressed-tensors", weight_g_idx=torch.zeros(32, dtype=torch.int32)), PREFIX)
    with pytest.raises(ValueError, match=r"unexpected \['g_idx'\]"):
        load_layer(checkpoint(tmp_path), PREFIX, fmt="awq")
    with pytest.raises(ValueError, match="fmt must be one of"):
        load_layer(checkpoint(tmp_path), PREFIX, fmt="exl2")


def test_malformed_tensors_in_a_file_are_refused_naming_the_tensor(tmp_path):
    with pytest.raises(ValueError, match="g_idx"):
        load_layer(checkpoint(tmp_path, g_idx=torch.full((32,), 4, dtype=torch.int32)), PREFIX)
    with pytest.raises(ValueError, match="weight_shape"):
        load_layer(checkpoint(tmp_path, "compressed-tensors", weight_shape=torch.tensor([16, 64])), PREFIX,
                   group_size=8)
    with pytest.raises(ValueError, match="group_size"):
        load_layer(checkpoint(tmp_path, "awq"), PREFIX)  # 4 groups: the size is config, never guessed
