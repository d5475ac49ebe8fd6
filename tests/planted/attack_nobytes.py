"""A red-team candidate (TARGET planted.attack_nobytes:claims_a_result_without_bytes) patched at import: every reply
of its process keeps the result's dtype and shape but carries no array (see tests/attack_run.py)."""
import sys

import torch

child = sys.modules["__main__"]  # the child runs as `python -m ...verify.child`: its globals are __main__'s

_real = child.send_reply
child.send_reply = lambda sock, reply, out: _real(sock, reply, None)


def claims_a_result_without_bytes(packed_weights, scales, zero_points=None, group_size=None,
                                  output_dtype=torch.float16):
    """Zeros (never sent: the reply says [out, in] of output_dtype and holds no bytes)."""
    return torch.zeros(packed_weights.shape[0], packed_weights.shape[1] * 2, dtype=output_dtype)
