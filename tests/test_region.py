"""verify.region: the judge's byte-for-byte view of the inputs it shared, and the comparison behind 'inputs
unchanged' (one byte anywhere, -0 against +0, NaN payloads: all differences)."""
import numpy as np
import torch

from int4_lora_harness.verify.region import Region, same_bytes, tensor_bytes


def test_same_bytes_sees_one_byte_anywhere_and_sizes():
    a = np.arange(1 << 16, dtype=np.uint32).view(np.uint8)
    assert same_bytes(a, a.copy()) and same_bytes(a[:0], a[:0])
    for where in (0, a.size // 2, a.size - 1):
        b = a.copy()
        b[where] ^= 1
        assert not same_bytes(a, b)
    assert not same_bytes(a, a[:-1])


def test_same_bytes_tells_minus_zero_and_nan_payloads_apart():
    zeros = torch.tensor([0.0, -0.0], dtype=torch.float16)
    assert not same_bytes(tensor_bytes(zeros[:1]), tensor_bytes(zeros[1:]))
    nans = torch.tensor([0x7E00, 0x7E01], dtype=torch.int16).view(torch.float16)
    assert not same_bytes(tensor_bytes(nans[:1]), tensor_bytes(nans[1:]))


def test_a_write_through_the_shared_memory_names_that_input_only():
    inputs = dict(x=torch.randn(4, 8, dtype=torch.float16), packed_weights=torch.randint(0, 255, (8, 4),
                                                                                        dtype=torch.uint8))
    region = Region(inputs)
    try:
        assert region.modified() == []
        _, _, shape, offset = next(e for e in region.layout if e[0] == "packed_weights")
        region.bytes[offset + 31] ^= 0x10  # the last byte of the weights, as a candidate's write would land
        assert region.modified() == ["packed_weights"]
    finally:
        region.close()


def test_sharing_a_cases_inputs_and_updating_them_counts_as_transfer_not_as_judging():
    from int4_lora_harness.verify.in_process import InProcessExecutor
    x = torch.ones(64, 1024, dtype=torch.float32)  # 256 KiB
    executor = InProcessExecutor(lambda x: x * 2, "cpu", timeout=60.0)
    executor.start_case(dict(x=x), ("float32", [64, 1024]))
    assert executor.transfer_bytes == x.numel() * 4 and executor.transfer_s > 0
    before = executor.transfer_s
    reply = executor.call(updates=dict(x=-x))
    assert executor.transfer_bytes == 2 * x.numel() * 4 and executor.transfer_s > before
    executor.call_fresh()
    assert executor.transfer_bytes == 3 * x.numel() * 4
    assert reply["modified"] == [] and executor.calls == 2
    executor.region.close()
