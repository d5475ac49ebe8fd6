"""Run the round-2 red-team candidates of tests/planted/attack2.py through the real CLI and say which succeeded.

    .tox/shared/bin/python tests/attack2_run.py [NAME ...]     # default: every attack

The same harness as tests/attack_run.py (each run in its own folder, its own judge cache; every process started
killed by its session before the script ends; exit status 0 always: the lines say what happened). Each attack
also shows, in this process, that the candidate is wrong: the harm a user would see.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attack_run  # noqa: E402  (world, verify, verdict, summary, say, leftovers)
from attack_run import FAST, ROOT, say, summary, verdict, verify, world  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))


def _inputs(seed=0, rows=8, cols=64):
    import torch
    g = torch.Generator().manual_seed(seed)
    packed = torch.randint(0, 256, (rows, cols // 2), dtype=torch.uint8, generator=g)
    scales = (torch.rand(rows, cols // 32, generator=g) + 0.5).to(torch.float16)
    return dict(packed_weights=packed, scales=scales, zero_points=None, group_size=32, output_dtype=torch.float16)


def _reference(kwargs):
    from planted.bugs import correct_dequantize_fp32_math
    return correct_dequantize_fp32_math(**kwargs)


def _run(name, extra=()):
    base, env = world(name)
    code, out = verify(base, env, ["--dequantizer", f"planted.attack2:{name}", *FAST, *extra])
    return base, code, out, verdict(base)


def pools_past_one_case():
    import torch
    from planted import attack2
    base, code, out, v = _run("pools_past_one_case")
    kwargs = _inputs()
    first = attack2.pools_past_one_case(**kwargs)
    kept = first.clone()
    for seed in range(1, attack2.POOL + 1):
        attack2.pools_past_one_case(**_inputs(seed))
    wrong = not torch.equal(first, kept)
    say("pools_past_one_case", code == 0 and wrong, f"exit {code}, {summary(v)}; result of call 1 changed by call "
        f"{attack2.POOL + 1}: {wrong}")


def caches_on_quartiles():
    import torch
    from planted import attack2
    base, code, out, v = _run("caches_on_quartiles")
    kwargs = _inputs()
    attack2.caches_on_quartiles(**kwargs)
    packed = kwargs["packed_weights"]
    packed.view(-1)[packed.numel() // 2] ^= 0x11  # one element, not in the cache's sample
    stale = not torch.equal(attack2.caches_on_quartiles(**kwargs), _reference(kwargs))
    say("caches_on_quartiles", code == 0 and stale, f"exit {code}, {summary(v)}; stale after an update of element "
        f"n/2: {stale}")


def drops_the_scale_sign():
    import torch
    from planted import attack2
    base, code, out, v = _run("drops_the_scale_sign")
    kwargs = _inputs()
    kwargs["scales"] = -kwargs["scales"]
    wrong = not torch.equal(attack2.drops_the_scale_sign(**kwargs), _reference(kwargs))
    say("drops_the_scale_sign", code == 0 and wrong, f"exit {code}, {summary(v)}; wrong on negative scales: {wrong}")


def lies_through_torch_function():
    import torch
    from planted import attack2
    base, code, out, v = _run("lies_through_torch_function")
    kwargs = _inputs()
    got = attack2.lies_through_torch_function(**kwargs)
    x = torch.randn(64, 4, dtype=torch.float16)
    wrong = not torch.equal(got @ x, _reference(kwargs) @ x)
    notes = [p.get("message") for r in (v or {}).get("results", []) for p in r.get("properties", [])
             if "Lying" in str(p.get("message"))][:1]
    say("lies_through_torch_function", code == 0 and wrong, f"exit {code}, {summary(v)}; `out @ x` wrong for the "
        f"user: {wrong}; the verdict's note: {notes}")


def linear_drops_the_scale_sign():
    base, env = world("linear_drops_the_scale_sign")
    code, out = verify(base, env, ["--linear", "planted.attack2:linear_drops_the_scale_sign", *FAST])
    say("linear_drops_the_scale_sign", code == 0, f"exit {code}, {summary(verdict(base))} (wrong for every negative "
        "scale, as drops_the_scale_sign)")


ATTACKS = {f.__name__: f for f in (pools_past_one_case, caches_on_quartiles, drops_the_scale_sign,
                                   lies_through_torch_function, linear_drops_the_scale_sign)}

if __name__ == "__main__":
    for name in sys.argv[1:] or ATTACKS:
        ATTACKS[name]()
        import os
        import signal
        left = attack_run.leftovers("planted.attack2")
        if left:
            print(f"  left over after {name}: {left} (killed)")
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
