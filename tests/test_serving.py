"""The layer contract of SPEC §7: the reference's slices, slots and shards, the all-reduce's tolerance, the torch
layer at tp 1 / 2 / 4 under gloo, and the verifier's teeth (every planted layer bug of tests/planted/layers.py
is killed; a rank that raises, dies, hangs or computes forever becomes a verdict), and its boundary with the ranks
(tests/planted/layer_forgers.py: nothing a rank sends runs code in the judge, nothing a rank starts outlives it)."""
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from int4_lora_harness.kernels import torch_layer
from int4_lora_harness.reference import layer as R
from int4_lora_harness.reference.linear import linear_exact
from int4_lora_harness.serving import ranks, replies
from int4_lora_harness.serving.cases import case_from_wire, case_to_wire, make_layer_case
from int4_lora_harness.serving.ranks import RankPool
from int4_lora_harness.serving.strategies import misaligned_row_case
from int4_lora_harness.serving.tolerance import allreduce_error, layer_error
from int4_lora_harness.serving.verify_layer import verify_layer
from int4_lora_harness.verify import wire
from int4_lora_harness.verify.targets import UsageError
from int4_lora_harness.verify.tolerance import linear_error
from planted.layers import CORRECT_LAYERS, LAYER_BUGS

TORCH_LAYER = "int4_lora_harness.kernels.torch_layer:layer"
QKV = (32, 8, 8)  # Llama 3's grouped-query (4096, 1024, 1024), scaled down


def qkv_case(seed=0, dtype="fp16", **params):
    params = dict(dict(group_size=16, zero_granularity="grouped", zero_kind="int8"), **params)
    return make_layer_case(seed, QKV, 64, 6, dtype, max_loras=3, max_rank=4, rewrite_ranks=[2, 1, 2], **params)


# ---- the reference: slices, slots, shards -------------------------------------------------------------

def test_each_slice_adds_its_own_adapter_to_its_own_columns_only():
    case = qkv_case()
    y = R.layer_exact(*case.reference_args())
    w = case.weights
    for s, offset in enumerate(R.slice_offsets(QKV)):
        rows = slice(offset, offset + QKV[s])
        alone = linear_exact(case.x, w.packed[rows], w.scales[rows], w.zero_points[rows], w.group_size,
                             case.lora_a_stacked[s][:, 0], case.lora_b_stacked[s][:, 0], case.lora_indices,
                             case.scaling, case.bias[rows])
        np.testing.assert_allclose(y[:, rows], alone, rtol=1e-12, atol=1e-12)


def test_layer_equals_the_linear_with_block_diagonal_adapters_the_tolerance_judges():
    case = qkv_case(seed=1)
    np.testing.assert_allclose(R.layer_exact(*case.reference_args()), linear_exact(*case.as_linear().reference_args()),
                               rtol=1e-12, atol=1e-12)


def test_writing_a_lower_rank_adapter_resets_the_slot_and_leaves_the_inputs_alone():
    case = qkv_case()
    a_before = [a.copy() for a in case.lora_a_stacked]
    slot = case.rewrite.slot
    a_after, b_after = R.write_slot(case.lora_a_stacked, case.lora_b_stacked, slot, case.rewrite.lora_a,
                                    case.rewrite.lora_b)
    for s, rank in enumerate([2, 1, 2]):
        assert np.array_equal(a_after[s][slot, 0, :rank], case.rewrite.lora_a[s])
        assert not a_after[s][slot, 0, rank:].any() and not b_after[s][slot, 0, :, rank:].any()
        assert np.array_equal(np.delete(a_after[s], slot, axis=0), np.delete(a_before[s], slot, axis=0))
        assert np.array_equal(case.lora_a_stacked[s], a_before[s])  # a pure function: no input written


def test_writing_a_slot_changes_exactly_the_tokens_of_that_slot():
    case = qkv_case()
    before = R.layer_exact(*case.reference_args())
    after = R.layer_exact(*case.rewritten().reference_args())
    mine = case.lora_indices == case.rewrite.slot
    assert np.array_equal(before[~mine], after[~mine])
    assert (np.abs(before[mine] - after[mine]).max(axis=1) > 0).all()


def test_write_slot_refuses_an_adapter_above_max_rank():
    case = qkv_case()
    too_big = [np.ones((5, 64))] + [None, None]
    with pytest.raises(ValueError, match="rank <= max_rank = 4"):
        R.write_slot(case.lora_a_stacked, case.lora_b_stacked, 0, too_big, [np.ones((32, 5)), None, None])


def test_column_shards_split_every_slice_separately_like_merged_column_parallel():
    assert R.rank_columns(QKV, 1, 2).tolist() == [*range(16, 32), *range(36, 40), *range(44, 48)]


@pytest.mark.parametrize("style", R.STYLES)
@pytest.mark.parametrize("tp", [2, 4])
def test_the_ranks_references_combine_to_the_unsharded_layer(style, tp):
    case = qkv_case(seed=2)
    parts = [R.layer_exact(*R.shard(*case.reference_args(), tp_rank=r, tp_size=tp, style=style)) for r in range(tp)]
    np.testing.assert_allclose(R.combine(parts, style, QKV), R.layer_exact(*case.reference_args()), rtol=1e-12,
                               atol=1e-12)


def test_a_row_shard_that_splits_a_quantization_group_is_refused_by_reference_and_torch_layer():
    case = misaligned_row_case(2)  # shards of 10 columns, groups of 8
    with pytest.raises(ValueError, match="must not split a quantization group"):
        R.shard(*case.reference_args(), tp_rank=0, tp_size=2, style="row")
    with pytest.raises(ValueError, match="must not split a quantization group"):
        torch_layer.layer(**case.torch_kwargs("cpu"), tp_rank=1, tp_size=2, style="row")


def test_a_column_shard_of_a_slice_tp_does_not_divide_is_refused():
    case = make_layer_case(0, (6, 3), 16, 2, group_size=8)
    with pytest.raises(ValueError, match="must all be multiples of tp_size = 2"):
        torch_layer.layer(**case.torch_kwargs("cpu"), tp_rank=0, tp_size=2, style="column")


# ---- the tolerance of a row-parallel all-reduce ---------------------------------------------------------

def test_fp16_row_partials_need_the_allreduce_term_and_pass_with_it():
    """Correct fp16 partials summed in fp16 fail the unsharded linear's bound (it has no term for the partials'
    roundings) and pass serving.tolerance's: the all-reduce's extra roundings are in the model, explicitly."""
    case = qkv_case(seed=1)
    kwargs = case.torch_kwargs("cpu")
    partials = [torch_layer.layer(**kwargs, tp_rank=r, tp_size=2, style="row") for r in range(2)]
    got = (partials[0] + partials[1]).double().numpy()
    assert linear_error(got, case.as_linear()).max_ratio > 1
    report = layer_error(got, [p.double().numpy() for p in partials], case, "row", "fp16")
    assert report.passed, report.worst()


def test_allreduce_error_counts_one_rounding_per_partial_and_tp_minus_one_additions():
    partials = np.full((4, 1, 1), 1.0)
    fp16 = 2.0 ** -11  # unit roundoff
    expected = fp16 * 4 + 4 * 2.0 ** -25 + 3 * (fp16 * 4 + 2.0 ** -25)
    assert allreduce_error(partials, "fp16", "fp16")[0, 0] == pytest.approx(expected)


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_torch_layer_at_tp1_is_within_tolerance_of_the_reference(dtype):
    for style in R.STYLES:
        case = qkv_case(seed=3, dtype=dtype)
        got = torch_layer.layer(**case.torch_kwargs("cpu"), style=style).float().numpy().astype(np.float64)
        report = linear_error(got, case.as_linear())
        assert report.passed, (style, report.worst())


# ---- the verifier, on ranks of its own (gloo) --------------------------------------------------------------

@pytest.fixture(scope="module")
def pool2():
    pool = RankPool(2, "cpu", timeout=30.0)
    yield pool
    pool.close()


@pytest.mark.parametrize("tp", [1, 2])
def test_torch_layer_passes_every_style(tp, pool2):
    pool = pool2 if tp == 2 else None
    results = verify_layer(TORCH_LAYER, tp, R.STYLES, max_examples=12, seed=0, timeout=30.0, pool=pool)
    for result in results:
        assert result["passed"], (result["style"], result["failure"])
        assert all(p["cases"] >= 15 for p in result["properties"] if p["name"] != "refuses a group-splitting shard")
        assert [r["rank"] for r in result["ranks"]] == list(range(tp))
    row = next(r for r in results if r["style"] == "row")
    assert tp == 1 or "split a quantization group" in row["refusal"]


@pytest.mark.parametrize("bug", sorted(LAYER_BUGS))
def test_every_planted_layer_bug_is_killed_at_tp2(bug, pool2):
    [result] = verify_layer(f"planted.layers:{bug}", 2, (LAYER_BUGS[bug],), max_examples=12, pool=pool2)
    assert not result["passed"]
    assert result["failure"]["kind"] == "wrong"
    expected = "slot rewrite" if bug == "slot_written_without_reset" else "within tolerance"
    assert expected in result["failure"]["failed"], result["failure"]
    assert not all(r["passed"] for r in result["ranks"])


def test_bias_added_on_every_rank_is_blamed_on_the_ranks_past_zero(pool2):
    [result] = verify_layer("planted.layers:bias_on_every_rank", 2, ("row",), max_examples=4, pool=pool2)
    assert [r["passed"] for r in result["ranks"]] == [True, False]


def test_the_fuzzer_alone_finds_and_shrinks_a_slot_written_without_reset(pool2):
    [result] = verify_layer("planted.layers:slot_written_without_reset", 2, ("column",), max_examples=40,
                            pool=pool2, named=False)
    assert result["failure"]["failed"] == ["slot rewrite"]
    case = result["failure"]["case"]
    assert case["slots"]["max_rank"] > case["rewrite"]["ranks"][0]  # shrunk, but still a lower-rank rewrite


@pytest.mark.parametrize("layer", CORRECT_LAYERS)
def test_a_correct_layer_written_differently_passes(layer, pool2):
    [result] = verify_layer(f"planted.layers:{layer}", 2, ("row",), max_examples=12, pool=pool2)
    assert result["passed"], result["failure"]


def test_row_partials_of_different_dtypes_on_different_ranks_are_refused(pool2):
    [result] = verify_layer("planted.layers:mixed_partial_dtypes", 2, ("row",), max_examples=2, pool=pool2)
    assert result["failure"]["failed"] == ["shape, dtype and device"]
    assert "partial sums are not all" in result["failure"]["message"]


def test_a_target_that_does_not_exist_is_a_usage_error(pool2):
    with pytest.raises(UsageError, match="has no function"):
        verify_layer("planted.layers:no_such_layer", 2, ("column",), pool=pool2)


def test_a_rank_that_raises_becomes_a_raised_verdict_naming_the_rank(pool2):
    [result] = verify_layer("planted.layers:raises_on_rank_one", 2, ("column",), pool=pool2)
    assert result["failure"]["kind"] == "raised"
    assert "rank 1" in result["failure"]["message"] and "ran out of workspace" in result["failure"]["message"]
    assert [r["passed"] for r in result["ranks"]] == [False, False]
    assert "raised in its first call" in result["ranks"][1]["message"]


def test_a_rank_that_dies_becomes_a_crashed_verdict_and_a_fresh_group_follows(pool2):
    [result] = verify_layer("planted.layers:dies_on_rank_one", 2, ("column",), pool=pool2)
    assert result["failure"]["kind"] == "crashed"
    assert "exited with status 3" in result["ranks"][1]["message"]
    [again] = verify_layer(TORCH_LAYER, 2, ("column",), max_examples=2, pool=pool2)
    assert again["passed"]


def test_a_rank_that_hangs_becomes_a_hung_verdict_within_the_timeout(pool2):
    pool2.timeout = 4.0
    try:
        [result] = verify_layer("planted.layers:hangs_on_rank_one", 2, ("column",), pool=pool2)
    finally:
        pool2.timeout = 30.0
    assert result["failure"]["kind"] == "hung"
    assert "still in its candidate call" in result["ranks"][1]["message"]
    assert "waited for the other ranks" in result["ranks"][0]["message"]


def test_torch_layer_passes_every_style_at_tp4():
    results = verify_layer(TORCH_LAYER, 4, R.STYLES, max_examples=6, seed=1, timeout=60.0)
    assert [(r["style"], r["passed"]) for r in results] == [(s, True) for s in R.STYLES], \
        [r["failure"] for r in results]


# ---- the boundary: what crosses between judge and ranks, and what a rank leaves behind ---------------------

def test_a_case_crosses_to_the_ranks_as_json_and_raw_arrays_bitwise():
    case = qkv_case(seed=4, dtype="bf16", zero_kind="float")
    tree, arrays = wire.pack(case_to_wire(case))
    back = case_from_wire(wire.unpack(json.loads(json.dumps(tree)), [a.copy() for _, a in arrays]))
    for a, b in zip(back.reference_args(), case.reference_args()):
        for x, y in zip(*(v if isinstance(v, tuple) else (v,) for v in (a, b))):
            assert type(x) is type(y) and (np.array_equal(x, y) and x.dtype == y.dtype if hasattr(x, "dtype") else
                                           x == y), (x, y)
    assert back.weights.scales_dtype == "fp16" and back.weights.zero_points_dtype == "fp16"


@pytest.mark.parametrize("tree, count, rule", [
    ({"__array__": 1}, 1, "names no array of the 1 sent"),
    ({"__array__": 0, "also": 1}, 1, "names no array"),
    ({"__array__": True}, 1, "names no array"),
    ([{"__array__": 0}, {"__array__": 0}], 1, "or one named before"),
    ({"a": 1}, 1, "1 of the 1 arrays sent are named nowhere"),
    (json.loads("[" * 20 + "]" * 20), 0, "nested deeper than 16")])
def test_unpack_refuses_a_tree_that_does_not_name_each_array_once(tree, count, rule):
    with pytest.raises(wire.WireError, match=rule):
        wire.unpack(tree, [np.zeros(1)] * count)


def test_a_header_of_thousands_of_nested_lists_is_a_wire_error_not_a_recursion_error_in_the_judge():
    import socket
    import struct
    judge, rank = socket.socketpair()
    with judge, rank:
        text = b"[" * 100_000 + b"]" * 100_000
        rank.sendall(struct.pack("<Q", len(text)) + text)
        with pytest.raises(wire.WireError, match="the header is not JSON"):
            wire.receive(judge)


@pytest.mark.parametrize("tree, rule", [
    ({"x": object()}, "a object cannot travel"),
    ({"x": np.zeros(2, bool)}, "dtype bool does not travel as itself"),
    ({"x": np.zeros(2, ">f4")}, "dtype float32 does not travel as itself"),
    ({1: np.zeros(2)}, "key that is not a string")])
def test_pack_takes_only_plain_values_and_arrays_whose_bytes_travel_as_they_are(tree, rule):
    with pytest.raises(wire.WireError, match=rule):
        wire.pack(tree)


def test_the_judge_accepts_only_the_arrays_a_case_reply_may_hold():
    """Column at tp 2, three calls: rank 0 sends its [M, out / 2] and the two gathered blocks per call, rank 1 its
    own; row: a partial in x.dtype or fp32, rank 0's all-reduced sum in x.dtype. Anything else, before allocation."""
    own = dict(dtype="float16", shape=[6, 24])
    column = replies.Expected.case(qkv_case(), "column", 2, 3)
    column.accept(0)([own] * 9)
    column.accept(1)([own] * 2)
    for rank, metas, rule in [(0, [own] * 12, "12 arrays where 3 per call, for at most 3 calls"),
                              (0, [own] * 2, "2 arrays where 3 per call"),
                              (1, [own, dict(own, dtype="float32")], "array 1 as float32 .6, 24. where float16"),
                              (1, [dict(own, shape=[6, 48])], r"array 0 as float16 \[6, 48\] where float16 \[6, 24\]")]:
        with pytest.raises(wire.WireError, match=rule):
            column.accept(rank)(metas)
    row = replies.Expected.case(qkv_case(), "row", 2, 2)
    partial, total = dict(dtype="float32", shape=[6, 48]), dict(dtype="float16", shape=[6, 48])
    row.accept(0)([partial, total, partial, total])
    with pytest.raises(wire.WireError, match="array 1 as float32 .6, 48. where float16"):
        row.accept(0)([partial, partial])


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """The file the hostile layers name (HOSTILE_MARKER): set before their ranks start, so they see it."""
    path = tmp_path / "marker"
    monkeypatch.setenv("HOSTILE_MARKER", str(path))
    return path


def test_a_result_subclass_whose_pickling_runs_code_fails_and_runs_nothing_in_the_judge(marker):
    """The rank's harness patched to send the subclass, and RunsCode in every dict it pickles: a judge that
    unpickled anything of the rank would create the marker."""
    [result] = verify_layer("planted.layer_forgers:subclass_runs_code", 1, ("column",), max_examples=1, timeout=30.0)
    assert not result["passed"]
    assert "within tolerance" in result["failure"]["failed"], result["failure"]  # its zeros judged, nothing else
    assert not marker.exists()


def test_a_reply_claiming_arrays_the_judge_did_not_expect_is_refused_before_allocation_as_crashed(marker):
    [result] = verify_layer("planted.layer_forgers:claims_a_huge_result", 1, ("column",), max_examples=1,
                            timeout=30.0)
    assert result["failure"]["kind"] == "crashed"
    message = result["ranks"][0]["message"]
    assert "broke the wire format" in message and "float64 [1048576, 1048576]" in message, message
    assert "where float16 [8, 24] was expected" in message  # the first named case: QKV 4:1:1, 4 columns a unit


def _running(pids):
    """The pids among `pids` of processes still running (a zombie is not), after at most ~2 s for SIGKILLs to land."""
    def state(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return "gone"
    for _ in range(40):
        running = [pid for pid in pids if state(pid) not in ("gone", "Z", "X")]
        if not running:
            break
        time.sleep(0.05)
    return running


def tagged(tag):
    """PIDs of live processes whose command line holds `tag`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and tag.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            pass
    return found


def test_nothing_a_rank_started_outlives_the_run(marker, monkeypatch, capfd):
    tag = f"int4-sleeper-{os.getpid()}-a"
    monkeypatch.setenv("HOSTILE_MARKER", str(marker.with_name(tag)))
    [result] = verify_layer("planted.layer_forgers:starts_a_process", 1, ("column",), max_examples=1, timeout=30.0)
    assert not result["passed"]
    assert f"sleeper started: {tag}" in capfd.readouterr().err  # it ran, so there was something to outlive the run
    assert tagged(tag) == []


def test_a_keyboard_interrupt_mid_case_kills_every_rank_and_what_it_started(marker, monkeypatch, capfd):
    tag = f"int4-sleeper-{os.getpid()}-b"
    monkeypatch.setenv("HOSTILE_MARKER", str(marker.with_name(tag)))
    started = []

    def interrupt(wait, rank, header):  # Ctrl-C as the first progress note arrives (the sleeper started before it)
        started.append(tag in capfd.readouterr().err or bool(tagged(tag)))
        raise KeyboardInterrupt
    monkeypatch.setattr(ranks._Wait, "_note", interrupt)
    pool = RankPool(1, "cpu", timeout=30.0)
    with pytest.raises(KeyboardInterrupt):
        verify_layer("planted.layer_forgers:starts_a_process", 1, ("column",), max_examples=1, pool=pool)
    assert pool.processes == [] and started == [True] and tagged(tag) == []


def test_a_rank_that_computes_forever_is_slow_not_hung(pool2):
    pool2.timeout = 1.0
    try:
        [result] = verify_layer("planted.layer_forgers:spins_on_rank_one", 2, ("column",), pool=pool2)
    finally:
        pool2.timeout = 30.0
    assert result["failure"]["kind"] == "slow"
    assert "more than its budget" in result["ranks"][1]["message"]
    assert "waited for the other ranks" in result["ranks"][0]["message"]


def test_a_rank_that_progresses_slowly_for_longer_than_the_timeout_is_not_hung(pool2):
    """Rank 1's first call takes 3 s at a tenth of a core, with --timeout 1 s: slow, never stopped, so it passes."""
    pool2.timeout = 1.0
    try:
        [result] = verify_layer("planted.layer_forgers:progresses_slowly_on_rank_one", 2, ("column",),
                                max_examples=1, pool=pool2)
    finally:
        pool2.timeout = 30.0
    assert result["passed"], result["failure"]
