"""verify.child: a case's later calls answer by digest, the digest tells bits apart (-0 from +0, one changed
element), and the values cross the pipe only where the judge asks for them."""
import torch

from int4_lora_harness.verify.child import Holder, digest, dumps, loads


def test_equal_digests_mean_equal_bits_and_any_changed_bit_changes_the_digest():
    t = torch.randn(64, 33).half()
    assert digest(t) == digest(t.clone())
    changed = t.clone()
    changed.view(torch.int16)[63, 32] ^= 1  # the last element, one ulp away
    assert digest(changed) != digest(t)
    assert digest(torch.tensor([0.0])) != digest(torch.tensor([-0.0]))
    assert digest(t) != digest(t.reshape(33, 64)) and digest(t) != digest(t.view(torch.int16))  # shape, dtype
    assert digest(torch.zeros(0, 4)) != digest(torch.zeros(4, 0))


def test_a_later_call_sends_its_digest_only_and_a_first_call_its_values():
    holder = Holder(lambda a: a * 2, "cpu")
    holder.start_case(dict(a=torch.arange(6.0)))
    first, second = holder.call(), holder.call(send_out=False)
    assert torch.equal(first["out"], torch.arange(6.0) * 2) and second["out"] is None
    assert first["digest"] == second["digest"]
    holder.update("a", torch.arange(6.0) + 1)
    fresh = holder.call_fresh()
    assert fresh["out"] is None and fresh["digest"] != first["digest"]
    reply = loads(dumps(second))  # what crosses the pipe
    assert reply["digest"] == first["digest"] and reply["shape"] == [6]


def test_a_result_changed_after_it_was_returned_is_seen_through_its_digest():
    shared = torch.zeros(4)

    def into_one_buffer(a):
        shared.copy_(a)
        return shared
    holder = Holder(into_one_buffer, "cpu")
    holder.start_case(dict(a=torch.ones(4)))
    holder.call()
    assert holder.results_changed()["changed"] == []
    holder.inputs["a"].fill_(3.0)
    holder.call(send_out=False)
    assert holder.results_changed()["changed"] == [0]  # the second call overwrote the first result


def test_a_fresh_call_gets_new_tensors_holding_what_the_judge_sent_even_after_the_candidate_changed_its_own():
    seen = []

    def scribbles_on_its_input(a):
        seen.append(a)
        out = a * 2
        a.add_(1.0)  # modifies the input it was given
        return out
    holder = Holder(scribbles_on_its_input, "cpu")
    holder.start_case(dict(a=torch.arange(4.0)))
    first = holder.call()
    assert first["modified"] == ["a"] and torch.equal(first["out"], torch.arange(4.0) * 2)
    fresh = holder.call_fresh(send_out=True)
    assert seen[1] is not seen[0] and seen[1].data_ptr() != seen[0].data_ptr()  # a new tensor and storage
    assert torch.equal(fresh["out"], torch.arange(4.0) * 2)  # the values the judge sent, not the scribbled ones
    assert fresh["modified"] == ["a"]
    holder.update("a", torch.full((4,), 5.0))
    assert holder.call_fresh(send_out=True)["out"].tolist() == [10.0] * 4  # an update is what a fresh call sees


def test_a_bit_flip_in_an_input_is_a_modification_and_nan_or_negative_zero_kept_as_sent_is_not():
    def flips_a_sign_bit(a, flip):
        if flip:
            a.view(torch.int16)[0] ^= -0x8000
        return a.clone()
    holder = Holder(flips_a_sign_bit, "cpu")
    holder.start_case(dict(a=torch.tensor([0.0, float("nan"), -0.0], dtype=torch.float16), flip=False))
    assert holder.call()["modified"] == []
    holder.inputs["flip"] = True
    assert holder.call()["modified"] == ["a"]  # +0 became -0: equal values, different bits
