"""TARGET strings ('pkg.module:function' or 'path/to/file.py:function') -> the candidate callable.

Every contract calls its candidate by keyword (docs/contract.md), so the signature check binds the
contract's parameter names by keyword, as the call will: a function with the right arity but
other names is a usage error, not a run of failing cases.

A TARGET that names an object with callable attributes `prepare` and `apply` (a class with static or class
methods, a namespace, an instance) is two-phase (docs/contract.md, "Two-phase kernels"): `prepare` takes
the weights (the layout's weight arguments) once per weight set, `apply` takes `prepared` and the other
arguments on every call. It loads as a TwoPhase; each phase's signature is checked like a function's.
"""
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from int4_lora_harness.checkout import root_last


# The arguments of each contract that are not weights: what a two-phase `apply` takes after `prepared`. Every other
# argument of the contract in the run's layout is a weight, `prepare`'s (harness.verify.layouts.parameters).
APPLY_PARAMETERS = {"dequantizer": ("output_dtype",),
                    "linear": ("x", "lora_a", "lora_b", "lora_indices", "scaling", "bias")}
PHASES = ("prepare", "apply")


class UsageError(Exception):
    """A problem with how verify was called: one line, exit status 2."""


@dataclass(frozen=True)
class TwoPhase:
    """A two-phase candidate: `prepare(**weights)` once per weight set -> any object; `apply(prepared=that,
    **the other arguments)` on every call -> the result. Called as one function (prepare, then apply) where a
    caller has no use for the phases."""
    prepare: object  # callable
    apply: object  # callable
    weights: tuple  # the argument names prepare takes, in the run's layout

    def split(self, kwargs):
        """(prepare's keyword arguments, apply's) of the one-call form's `kwargs`."""
        return ({k: v for k, v in kwargs.items() if k in self.weights},
                {k: v for k, v in kwargs.items() if k not in self.weights})

    def __call__(self, **kwargs):
        weights, rest = self.split(kwargs)
        return self.apply(prepared=self.prepare(**weights), **rest)


def prepare_parameters(parameters, contract):
    """The names among `parameters` (the one-call form's, in a layout) that a two-phase `prepare` takes: the
    weights. Empty for a contract without a two-phase form."""
    if contract not in APPLY_PARAMETERS:
        return ()
    return tuple(p for p in parameters if p not in APPLY_PARAMETERS[contract])


def split_target(target):
    """'module:function' -> (module, function), or UsageError."""
    if not isinstance(target, str):
        raise UsageError(f"TARGET must be a string 'package.module:function' or 'path/to/file.py:function', "
                         f"got {type(target).__name__}")
    module_name, sep, function_name = target.rpartition(":")
    if not sep or not module_name or not function_name:
        raise UsageError(f"TARGET must be 'package.module:function' or 'path/to/file.py:function', got {target!r}")
    return module_name, function_name


def import_module(module_name):
    """The module of a TARGET: a .py file by path (its folder on sys.path, as `python file.py` puts it, so the
    modules beside it import), or a module importable from here (the cwd included)."""
    if module_name.endswith(".py"):
        if not Path(module_name).is_file():
            raise UsageError(f"TARGET file {module_name} does not exist")
        folder = str(Path(module_name).resolve().parent)
        if folder not in sys.path:  # kept after the import: a candidate may import a neighbour when called
            sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(spec.name, module)  # dataclasses and pickling look modules up by name
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:  # as `python -m` does, so `int4-verify --linear mypkg.ops:fn` finds mypkg
        sys.path.insert(0, os.getcwd())
        root_last()  # unless the cwd is this checkout: its kernels/ must not hide an installed kernels
    return importlib.import_module(module_name)


def load_target(target, parameters, contract=None):
    """The callable `target` names (for a two-phase TARGET, its TwoPhase), checked to accept every name of
    `parameters` by keyword (a two-phase one: prepare its weights, apply `prepared` and the rest).

    UsageError (one line) for a malformed TARGET, a missing file or function, an import that raises
    an Exception, or a signature that cannot take the parameters by keyword. BaseExceptions raised
    while importing (SystemExit, KeyboardInterrupt) propagate: the caller decides what they mean.
    """
    module_name, function_name = split_target(target)
    try:
        module = import_module(module_name)
    except UsageError:
        raise
    except Exception as error:  # an import failure is the caller's to fix: report it in one line
        raise UsageError(f"cannot import {module_name}: {type(error).__name__}: {error}") from None
    function = getattr(module, function_name, None)
    phases = [p for p in PHASES if callable(getattr(function, p, None))]
    if contract in APPLY_PARAMETERS and (phases == ["prepare"] or phases == ["apply"] and not callable(function)):
        missing = next(p for p in PHASES if p not in phases)
        raise UsageError(f"{target} has {phases[0]} but no callable {missing}: a two-phase "
                         f"TARGET has both (see docs/contract.md)")
    if contract in APPLY_PARAMETERS and phases == list(PHASES):
        return two_phase(function, function_name, parameters, contract)
    if not callable(function):
        raise UsageError(f"{module_name} has no function {function_name!r} (nor an object with prepare and apply)")
    check_signature(function, function_name, parameters, f"the {contract} contract" if contract else "the contract")
    return function


def two_phase(target, name, parameters, contract):
    """The TwoPhase of `target` (its prepare and apply), each phase's signature checked against its names."""
    weights = prepare_parameters(parameters, contract)
    rest = tuple(p for p in parameters if p not in weights)
    check_signature(target.prepare, f"{name}.prepare", weights, f"the {contract} contract's prepare phase")
    check_signature(target.apply, f"{name}.apply", ("prepared", *rest), f"the {contract} contract's apply phase")
    return TwoPhase(target.prepare, target.apply, weights)


def check_signature(function, name, parameters, caller):
    """UsageError unless `function` accepts every name of `parameters` as a keyword argument (`caller`: who calls
    it that way, in words)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # builtins without a signature: let the call decide
    try:
        signature.bind(**{p: None for p in parameters})
    except TypeError as error:
        hint = " (an instance method: name an instance, or make it a staticmethod)" if "'self'" in str(error) else ""
        raise UsageError(f"{name}{signature} cannot be called as {caller} calls it, by keyword "
                         f"({', '.join(parameters)}): {error}{hint} (see docs/contract.md)") from None


def source_of(function):
    """The file a candidate (a two-phase one's prepare) was defined in, or '?'."""
    try:
        return str(Path(inspect.getsourcefile(getattr(function, "prepare", function))).resolve())
    except (TypeError, OSError):
        return "?"


def parameters(contract, layout="canonical"):
    """The keyword names a candidate of `contract` in `layout` must accept (docs/contract.md, docs/layouts/)."""
    if layout == "canonical":
        from int4_lora_harness.verify.cases import CONTRACT_PARAMETERS
        return CONTRACT_PARAMETERS[contract]
    from int4_lora_harness.verify import layouts
    return layouts.parameters(layouts.LAYOUTS[layout], contract)


def repro_target(label, contract):
    """The TARGET a repro script imports: `label` itself, or for a registry backend its module's function."""
    if ":" in label:
        return label
    from int4_lora_harness.kernels.registry import BACKENDS
    return f"{BACKENDS[label].module}:{'dequantize' if contract == 'dequantizer' else 'linear'}"
