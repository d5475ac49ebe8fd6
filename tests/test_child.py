"""The boundary with the candidate's process: a wire format that deserializes no object and allocates only what
the judge expects, and checks the judge computes itself on the bytes it received or reads in shared memory."""
import os
import socket
import struct
import tracemalloc

import numpy as np
import pytest
import torch

from int4_lora_harness.verify import wire
from int4_lora_harness.verify.in_process import InProcessExecutor


def pair():
    a, b = socket.socketpair()
    return a, b


def raw(sock, header):
    text = header.encode()
    sock.sendall(struct.pack("<Q", len(text)) + text)


def test_a_message_of_plain_json_and_raw_bytes_round_trips_bf16_bool_and_file_descriptors():
    a, b = pair()
    bf16 = torch.tensor([1.5, -2.0], dtype=torch.bfloat16).view(torch.uint16).numpy()
    flags = np.array([1, 0, 1], np.uint8)
    r, w = __import__("os").pipe()
    wire.send(a, dict(verb="x", n=3), [("bfloat16", bf16), ("bool", flags)], fds=[r])
    header, arrays, fds = wire.receive(b, with_fds=True)
    assert header["verb"] == "x" and header["n"] == 3 and len(fds) == 1
    assert np.array_equal(arrays[0], bf16) and np.array_equal(arrays[1], flags)


@pytest.mark.parametrize("meta", [
    '{"dtype": "object", "shape": [1]}', '{"dtype": "float32", "shape": [1.5]}', '{"dtype": "float32", "shape": ["1"]}',
    '{"dtype": "float32", "shape": [-1]}', '{"dtype": "float32", "shape": [[1]]}', '"float32"',
    '{"dtype": "float32", "shape": [1,1,1,1,1,1,1,1,1]}', '{"dtype": "float32", "shape": 7}'])
def test_an_array_of_an_unknown_dtype_or_a_shape_that_is_not_plain_ints_is_refused(meta):
    a, b = pair()
    raw(a, '{"status": "ok", "arrays": [' + meta + ']}')
    with pytest.raises(wire.WireError):
        wire.receive(b)


def test_an_array_the_judge_did_not_expect_is_refused_before_anything_is_allocated():
    a, b = pair()
    raw(a, '{"status": "ok", "arrays": [{"dtype": "float32", "shape": [268435456]}]}')  # 1 GiB announced

    def only_small(metas):
        if wire.nbytes(metas[0]["dtype"], metas[0]["shape"]) > 1024:
            raise wire.WireError("too big")
    tracemalloc.start()
    try:
        with pytest.raises(wire.WireError, match="too big"):
            wire.receive(b, only_small)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_a_header_that_is_not_json_or_too_long_is_refused():
    a, b = pair()
    raw(a, "cos\nsystem\n(S'echo pickled'\ntR.")  # a pickle: only ever read as text that is not JSON
    with pytest.raises(wire.WireError, match="not JSON"):
        wire.receive(b)
    a.sendall(struct.pack("<Q", wire.MAX_HEADER + 1))
    with pytest.raises(wire.WireError, match="header of"):
        wire.receive(b)


def judge_of(function):
    return InProcessExecutor(function, "cpu", timeout=60.0)


def test_the_judge_digests_each_result_itself_and_sees_a_later_call_that_differs():
    state = []

    def right_then_zeros(a):
        state.append(1)
        return a * 2 if len(state) == 1 else torch.zeros_like(a)
    judge = judge_of(right_then_zeros)
    judge.start_case(dict(a=torch.arange(6.0)), ("float32", [6]))
    first, second = judge.call(), judge.call(send_out=False)
    assert torch.equal(first["out"], torch.arange(6.0) * 2) and second["out"] is None
    assert first["digest"] != second["digest"]


def test_a_scribble_on_an_input_is_seen_in_shared_memory_whatever_the_candidates_process_says():
    def flips_a_bit_of_its_scales(a, scales):
        scales.view(torch.int16)[0] ^= 1
        return a.clone()
    judge = judge_of(flips_a_bit_of_its_scales)
    judge.start_case(dict(a=torch.ones(3), scales=torch.ones(2, dtype=torch.float16)), ("float32", [3]))
    assert judge.call()["modified"] == ["scales"]


def test_negative_zero_and_nan_kept_as_sent_are_not_modifications_and_a_sign_bit_flip_is():
    def flips_a_sign_bit(a, flip):
        if flip:
            a.view(torch.int16)[0] ^= -0x8000
        return a.clone()
    judge = judge_of(flips_a_sign_bit)
    a = torch.tensor([0.0, float("nan"), -0.0], dtype=torch.float16)
    judge.start_case(dict(a=a, flip=False), ("float16", [3]))
    assert judge.call()["modified"] == []
    judge.start_case(dict(a=a, flip=True), ("float16", [3]))
    assert judge.call()["modified"] == ["a"]  # +0 became -0: equal values, different bits


def test_a_result_changed_after_it_was_returned_is_seen_by_the_judges_own_digest():
    shared = torch.zeros(4)

    def into_one_buffer(a):
        shared.copy_(a)
        return shared
    judge = judge_of(into_one_buffer)
    judge.start_case(dict(a=torch.ones(4)), ("float32", [4]))
    judge.call()
    assert judge.results_changed() == []
    judge.call(updates=dict(a=torch.full((4,), 3.0)))
    assert judge.results_changed() == [0]  # the second call overwrote the first result


def test_a_fresh_call_gets_new_storage_holding_what_the_judge_sent_and_an_update_is_what_it_sees():
    seen = []

    def doubles(a):
        seen.append(a)
        return a * 2
    judge = judge_of(doubles)
    judge.start_case(dict(a=torch.arange(4.0)), ("float32", [4]))
    judge.call()
    fresh = judge.call_fresh(send_out=True)
    assert seen[1].data_ptr() != seen[0].data_ptr() and torch.equal(fresh["out"], torch.arange(4.0) * 2)
    judge.call(updates=dict(a=torch.full((4,), 5.0)))
    assert judge.call_fresh(send_out=True)["out"].tolist() == [10.0] * 4


def test_a_result_of_another_shape_or_dtype_is_described_but_its_bytes_are_never_taken():
    judge = judge_of(lambda a: torch.zeros(5, dtype=torch.float64))
    judge.start_case(dict(a=torch.ones(4)), ("float32", [4]))
    reply = judge.call()
    assert reply["out"] is None and reply["digest"] is None
    assert reply["tensor"] and reply["shape"] == [5] and reply["dtype"] == "float64"


def test_the_scratch_folder_of_a_judge_that_is_gone_is_swept_and_a_live_ones_kept(tmp_path):
    import subprocess
    from int4_lora_harness.verify.scratch import PREFIX, sweep
    gone = subprocess.Popen(["true"])
    gone.wait()  # its PID is free now (reused only after the PID space wraps)
    dead = tmp_path / f"{PREFIX}{gone.pid}-abc"
    live = tmp_path / f"{PREFIX}{os.getpid()}-abc"
    other = tmp_path / "int4-candidate-notapid"
    for folder in (dead, live, other):
        (folder / "cache").mkdir(parents=True)
    sweep(tmp_path)
    assert not dead.exists() and live.exists() and other.exists()
