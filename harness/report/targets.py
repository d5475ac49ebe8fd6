"""Which kernel a verdict or a benchmark row is about: one key per target, however its TARGET was spelled.

`mykernel.py:f`, `./mykernel.py:f`, `mykernel:f` and `/home/me/mykernel.py:f` name one function when they
lead to one file. A verdict records, per result, the file the function was defined in (`source`, resolved
by the candidate's process) and the folder the run was started in (`cwd`, in files written since it was
recorded), so a result's identity is, in this order:

  1. a project backend (kind `backend`): its name (`torch`, `triton`);
  2. a recorded source file: (that file, the function's name);
  3. a `file.py:f` TARGET with an absolute path, or a relative one and the run's recorded folder: (the path
     joined to that folder, the function's name);
  4. otherwise (a relative file and no folder recorded, or a module whose file was never recorded, e.g. its
     import failed): the spelling itself, tidied (`./a/../b.py` -> `b.py`) and marked unresolved. It may be
     the same kernel as another row; the page says so rather than guess.

Benchmark rows keep the TARGET as it was given (their `backend` column) and no folder or source file, so
only step 4 applies there (`bench_target`).
"""
import os
import posixpath
from typing import NamedTuple

from int4_lora_harness.bench.grids import BACKENDS as PROJECT_BACKENDS  # the project's and the baselines' names

UNRESOLVED_FILE = ("a relative file and no folder of the run recorded (a file written before `cwd` was): "
                   "kept apart from other spellings that may name the same file")
UNRESOLVED_MODULE = ("a module whose file was never recorded (the import failed, or an older file): kept apart "
                     "from other spellings that may name the same file")


class Identity(NamedTuple):
    """A target as the summary groups it: `key` (equal for one kernel), `label` (how the page names it) and
    `unresolved` (None, or why the spelling itself had to stand for the kernel)."""
    key: tuple
    label: str
    unresolved: str | None = None


def split(target):
    """'module:function' -> ('module', 'function'); text without a colon -> (text, None)."""
    module, sep, function = target.rpartition(":")
    return (module, function) if sep and module and function else (target, None)


def tidy(path):
    """A path as written, without './', '//' or 'a/..' (nothing resolved on this machine)."""
    return posixpath.normpath(path) if path else path


def identity(result, run):
    """The Identity of one result of a verdict file (report.verdicts.result) in `run` (report.verdicts.run)."""
    name = result["candidate"]
    if result["kind"] == "backend":
        return Identity(("backend", name), name)
    module, function = split(result["target"] or name)
    if function is None:
        return Identity(("spelling", tidy(module)), name, "not a module:function TARGET")
    source = result["source"]
    if source and source != "?" and os.path.isabs(source):
        path = tidy(source)
        return Identity(("file", path, function), f"{path}:{function}")
    if module.endswith(".py"):
        folder = run.get("cwd")
        if os.path.isabs(module) or (folder and os.path.isabs(folder)):
            path = tidy(module if os.path.isabs(module) else posixpath.join(folder, module))
            return Identity(("file", path, function), f"{path}:{function}")
        return Identity(("spelling", f"{tidy(module)}:{function}"), f"{tidy(module)}:{function}", UNRESOLVED_FILE)
    return Identity(("spelling", f"{module}:{function}"), f"{module}:{function}", UNRESOLVED_MODULE)


def bench_target(backend):
    """The TARGET a benchmark row timed, tidied ('./k.py:f' -> 'k.py:f'), or None for a project backend or a
    baseline. Rows record no folder or source file: `k.py:f` and `k:f` stay two targets."""
    if backend in PROJECT_BACKENDS:
        return None
    module, function = split(backend)
    if function is None:
        return backend
    return f"{tidy(module) if module.endswith('.py') else module}:{function}"


def bench_targets(backends):
    """The tidied TARGETs among a run's backend names (a tuple, sorted); () for a run of the project's backends."""
    return tuple(sorted({t for t in map(bench_target, backends) if t is not None}))
