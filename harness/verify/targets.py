"""TARGET strings ('pkg.module:function' or 'path/to/file.py:function') -> the candidate callable.

Every contract calls its candidate by keyword (docs/contract.md), so the signature check binds the
contract's parameter names by keyword, as the call will: a function with the right arity but
other names is a usage error, not a run of failing cases.
"""
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path

from int4_lora_harness.checkout import root_last


class UsageError(Exception):
    """A problem with how verify was called: one line, exit status 2."""


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


def load_target(target, parameters, contract="the contract"):
    """The callable `target` names, checked to accept every name of `parameters` by keyword.

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
    if not callable(function):
        raise UsageError(f"{module_name} has no function {function_name!r}")
    check_signature(function, function_name, parameters, contract)
    return function


def check_signature(function, name, parameters, contract):
    """UsageError unless `function` accepts every name of `parameters` as a keyword argument."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # builtins without a signature: let the call decide
    try:
        signature.bind(**{p: None for p in parameters})
    except TypeError as error:
        raise UsageError(f"{name}{signature} cannot be called as the {contract} contract calls it, by keyword "
                         f"({', '.join(parameters)}): {error} (see docs/contract.md)") from None


def source_of(function):
    """The file a candidate was defined in, or '?'."""
    try:
        return str(Path(inspect.getsourcefile(function)).resolve())
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
