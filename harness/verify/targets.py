"""TARGET strings ('pkg.module:function' or 'path/to/file.py:function') -> the candidate callable.

The signature is checked the way the candidate is called: by keyword for the dequantizer, by
keyword for every contract's named parameters (see docs/contract.md).
"""
import importlib
import importlib.util
import inspect
from pathlib import Path

from int4_lora_harness.verify.cases import CONTRACT_PARAMETERS


class UsageError(Exception):
    """A problem with how verify was called: one line, exit status 2."""


def load_target(target, contract):
    """'pkg.module:function' or 'path/to/file.py:function' -> the callable, checked against the contract."""
    module_name, sep, function_name = target.rpartition(":")
    if not sep or not module_name or not function_name:
        raise UsageError(f"TARGET must be 'package.module:function' or 'path/to/file.py:function', got {target!r}")
    try:
        if module_name.endswith(".py"):
            if not Path(module_name).is_file():
                raise UsageError(f"TARGET file {module_name} does not exist")
            spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except UsageError:
        raise
    except Exception as error:  # an import failure is the caller's to fix: report it in one line
        raise UsageError(f"cannot import {module_name}: {type(error).__name__}: {error}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UsageError(f"{module_name} has no function {function_name!r}")
    try:
        inspect.signature(function).bind(*CONTRACT_PARAMETERS[contract])
    except TypeError as error:
        raise UsageError(f"{function_name} does not take the {contract} contract's arguments "
                         f"({', '.join(CONTRACT_PARAMETERS[contract])}): {error}") from None
    except ValueError:
        pass  # builtins without a signature: let the call decide
    return function


def repro_target(label, contract):
    """The TARGET a repro script imports: `label` itself, or for a registry backend its module's function."""
    if ":" in label:
        return label
    from int4_lora_harness.kernels.registry import BACKENDS
    return f"{BACKENDS[label].module}:{'dequantize' if contract == 'dequantizer' else 'linear'}"
