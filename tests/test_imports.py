"""The package's import graph: no cycles, and dependencies pointing one way.

The graph is built from the source with the standard library's ``ast``: every ``import`` and
``from ... import`` anywhere in a module (inside functions too: a lazy import is still a
dependency; those under ``if TYPE_CHECKING:`` are for annotations and never run), relative
imports resolved, ``from pkg import name`` pointing at ``pkg.name`` when that is a module and at
``pkg`` (its ``__init__``) otherwise, even from inside ``pkg``. Importing
``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so it depends on those too (except on
the importer's own packages, which have run already). ``kernels/`` and ``targets/`` are
read as ``robustq_deploy.kernels`` and ``robustq_deploy.targets``, the names they install under.

The rule (docs/architecture.md): ``cli`` -> ``pipeline`` -> stages -> ground floor. A kernel
library never imports the compiler that uses it; a target backend registers itself, so the
compile stage and the runtime never import one.
"""
from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "robustq_deploy"

# The layers, lowest first; a module imports only from its own part of the package or from a
# lower layer. Ground floor: the config schema, errors, registries, the TOML reader, manifests,
# dtypes, the fixed-point arithmetic, onnxruntime's MLAS arithmetic, target descriptions and the
# kernel library. Libraries the
# stages share: quantized modules, datasets, architectures, attacks, checkpoint I/O. The stages
# (and the runtime that runs their artifacts). On top: validation of a whole run, the pipeline,
# the library API and the command line.
LAYERS = [
    ("errors", "registry", "tomlfile", "config", "manifest", "seal", "progress", "dtypes", "fixed_point",
     "mlas", "targets", "kernels"),
    ("quant", "data", "models", "attacks", "checkpoint"),
    ("train", "export", "compile", "accel", "verify", "runtime", "certify", "twin"),
    ("validation", "pipeline", "api", "cli", "__main__", ""),
]


def modules() -> dict[str, Path]:
    """Module name -> file, for every module of the package (links followed)."""
    out = {}
    root = REPO / PACKAGE
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = Path(folder).relative_to(REPO)
        for f in files:
            if f.endswith(".py"):
                parts = [*rel.parts, f[:-3]]
                if parts[-1] == "__init__":
                    parts.pop()
                out[".".join(parts)] = Path(folder) / f
    return out


def imports_of(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports (with the packages that run first)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):  # imports for annotations only never run
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                full = f"{mod}.{alias.name}"
                targets.append(full if full in mods else mod)
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            if t in mods and t != name:
                found.add(t)  # what the statement names: a package's own __init__ included
            parts = t.split(".")
            for i in range(1, len(parts)):  # a.b.c runs a and a.b first (the importer's own packages ran already)
                dep = ".".join(parts[:i])
                if dep in mods and not (name + ".").startswith(dep + "."):
                    found.add(dep)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(m, p, mods) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def area(module: str) -> str:
    """The top-level part of the package a module belongs to (``compile``, ``kernels``, ...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(g: dict[str, set[str]], source: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{m} -> {d}" for m, deps in g.items() if area(m) in source
                  for d in deps if area(d) in forbidden and area(d) != area(m))


def test_the_graph_covers_the_package():
    g = graph()
    assert {"robustq_deploy.cli", "robustq_deploy.compile", "robustq_deploy.kernels.int8_conv2d",
            "robustq_deploy.targets", "robustq_deploy.targets.toolchain", "robustq_deploy.accel.backend"} <= set(g)
    assert "robustq_deploy.compile" in g["robustq_deploy.compile.cpu"]  # parent packages count


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(f"{len(c)}: {', '.join(c)}" for c in found)


def test_dependencies_point_one_way():
    g = graph()
    layer = {a: i for i, names in enumerate(LAYERS) for a in names}
    unplaced = sorted({area(m) for m in g} - set(layer))
    assert not unplaced, f"parts of the package in no layer of LAYERS: {unplaced}"
    upward = sorted(f"{m} -> {d}" for m, deps in g.items() for d in deps
                    if area(d) != area(m) and layer[area(d)] > layer[area(m)])
    assert upward == []
    # the kernel library never imports the compiler that uses it (only errors, registries, fixed-point math)
    kernel_deps = {d for m, deps in g.items() if area(m) == "kernels" for d in deps if area(d) != "kernels"}
    assert kernel_deps <= {"robustq_deploy.errors", "robustq_deploy.fixed_point", "robustq_deploy.registry"}
    # target backends register themselves: the compile stage and the runtime import none
    assert violations(g, ("compile", "runtime"), ("accel",)) == []
    # certification reads the exported graph: no compiler, accelerator, runtime or verify stage
    assert violations(g, ("certify",), ("compile", "accel", "runtime", "verify", "train")) == []
    # checkpoint I/O and dataset splits are ground floor: export, verify and runtime import no training
    assert violations(g, ("export", "verify", "runtime", "compile"), ("train",)) == []


def test_no_top_level_kernels_or_targets_package():
    """``kernels`` and ``targets`` install inside the package only (another PyPI package is called
    ``kernels``); package data is found through importlib.resources, not path arithmetic."""
    for name, path in sorted(modules().items()):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] in ("kernels", "targets") for a in node.names), name
            elif isinstance(node, ast.ImportFrom) and not node.level:
                assert (node.module or "").split(".")[0] not in ("kernels", "targets"), name
        assert "__file__).resolve().parents" not in path.read_text(), name


def test_the_compile_stage_and_the_runtime_name_no_target():
    """Kind-specific code lives in the backends: ``compile/`` and ``runtime.py`` never test a
    target's name (``grep -rn '"fpga-sim"' robustq_deploy/compile robustq_deploy/runtime.py``)."""
    files = [*(REPO / PACKAGE / "compile").rglob("*.py"), REPO / PACKAGE / "runtime.py"]
    named = [f"{p.relative_to(REPO)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
             if any(f"{q}{t}{q}" in line for t in ("fpga-sim", "x86", "aarch64") for q in "\"'")]
    assert named == []


def test_one_meaning_per_name():
    """Names that once meant two things are each defined once (``grep`` finds the right one):
    the kernel library's ``register_kernel`` (the compile stage's per-op table registers
    *implementations*), the accelerator's ``OffloadLayer`` and the fused builder's ``FusedGrid``
    (``LayerSpec`` is the quantization layer's, ``Grid`` the exporter's), the reference
    interpreter's ``OpContext``, the converters' ``ConverterContext`` and the twin's
    ``TwinOpContext`` (no ``NodeContext``; ``Ctx`` is the CLI's), and the attacks' ``PGDParams``
    / ``FGSMParams`` (the training methods' are ``PGDATParams`` / ``FGSMRSParams``)."""
    defined: dict[str, list[str]] = {}
    for name, path in modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                defined.setdefault(node.name, []).append(name)
    once = {"register_kernel": "robustq_deploy.kernels.registry", "register_implementation": None,
            "OffloadLayer": None, "FusedGrid": None, "OpContext": None, "ConverterContext": None,
            "TwinOpContext": None, "Ctx": "robustq_deploy.cli", "PGDParams": "robustq_deploy.attacks.pgd",
            "FGSMParams": "robustq_deploy.attacks.pgd", "PGDATParams": None, "FGSMRSParams": None,
            "LayerSpec": "robustq_deploy.quant.spec", "Grid": "robustq_deploy.export.lowering"}
    for word, home in once.items():
        assert len(defined.get(word, [])) == 1, (word, defined.get(word))
        assert home is None or defined[word] == [home], (word, defined[word])
    for gone in ("NodeContext", "kernel", "compile_hook"):
        assert gone not in defined, (gone, defined[gone])


def test_one_toml_reader():
    """Run configs, target descriptions and accelerator presets are read by one TOML reader
    (``robustq_deploy/tomlfile.py``: one-line errors naming the file)."""
    readers = sorted(name for name, path in modules().items()
                     if any(isinstance(n, (ast.Import, ast.ImportFrom)) and "tomllib" in
                            ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module])
                            for n in ast.walk(ast.parse(path.read_text()))))
    assert readers == ["robustq_deploy.tomlfile"]
