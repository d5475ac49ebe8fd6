"""int4-lora-harness: a ground truth, fast paths and a verifier for INT4-weight + multi-LoRA kernels.

Installed as one namespace, `int4_lora_harness` (this folder, harness/ in the repository):

| package                          | repo folder          | what                                               |
| -------------------------------- | -------------------- | -------------------------------------------------- |
| int4_lora_harness.reference      | reference/           | the NumPy ground truth of docs/contract.md         |
| int4_lora_harness.kernels        | kernels/             | the fast paths (torch, Triton)                     |
| int4_lora_harness.verify         | harness/verify/      | cases, strategies, tolerance, properties, the judge |
| int4_lora_harness.bench          | harness/bench/       | grids, timing, work, the parquet store, devices    |
| int4_lora_harness.report         | harness/report/      | the HTML page from recorded verdicts and runs      |
| int4_lora_harness.checkpoints    | harness/checkpoints/ | safetensors layers, real weights                   |

The judge (verify/) never imports kernels/: what it judges comes in as a TARGET.

Importing it moves this checkout's root to the end of sys.path (checkout.py), where `python -m` from the root put
it first: the folder kernels/ must not hide the registry's `kernels` that transformers imports.
"""
from int4_lora_harness.checkout import root_last

root_last()
__version__ = "0.2.0"
__all__ = ["__version__"]  # the subpackages are the surface: verify, bench, report, checkpoints, serving, testing
