"""The layout stays easy to see: one namespace, no import cycles, the judge never imports a kernel, small modules."""
import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"harness": "int4_lora_harness", "reference": "int4_lora_harness.reference",
           "kernels": "int4_lora_harness.kernels"}
MAX_LINES = 400


def modules():
    """{module name as installed: path} for every .py file of the three folders."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def imports(path):
    """Absolute module names `path` imports (the module, and module.name for `from module import name`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def graph():
    mods = modules()
    return {m: {d for d in imports(p) if d in mods and d != m} for m, p in mods.items()}


def test_every_package_folder_is_installed_under_the_one_namespace():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {m for m, p in modules().items() if p.name == "__init__.py"}
    assert packages == declared, f"pyproject.toml packages differ: missing {packages - declared}, extra {declared - packages}"


def test_no_two_modules_import_each_other():
    g = graph()
    cycles = sorted({tuple(sorted((a, b))) for a in g for b in g[a] if a in g.get(b, ())})
    assert not cycles, cycles


def test_the_judge_never_imports_a_kernel_and_the_reference_never_imports_torch():
    for name, path in modules().items():
        used = imports(path)
        # main, targets, cli: the registry's names; child and in_process: the candidate's own process (Triton's
        # interpreter corrected there before the candidate runs: kernels.triton_interpreter)
        if name.startswith("int4_lora_harness.verify.") and name.split(".")[-1] not in ("main", "targets", "cli",
                                                                                       "child", "in_process"):
            assert not any(u.startswith("int4_lora_harness.kernels") for u in used), name
        if name.startswith("int4_lora_harness.reference"):
            assert "torch" not in {u.split(".")[0] for u in used}, name


def test_no_module_of_the_harness_is_past_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules().values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_every_package_says_what_it_is_for_and_the_readme_lists_every_package():
    readme = (ROOT / "README.md").read_text()
    for name, path in modules().items():
        if path.name == "__init__.py":
            assert ast.get_docstring(ast.parse(path.read_text())), f"{name} has no docstring"
            folder = path.parent.relative_to(ROOT).as_posix()
            assert re.search(rf"`{re.escape(folder)}/?`", readme), f"README's layout table lacks {folder}/"
