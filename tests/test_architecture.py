"""The package layers of DESIGN.md, checked on the source: no import cycle between lmforge modules
or between its subpackages (function-level imports and package ``__init__`` imports counted), every
import goes down the layers, and imports inside functions are for optional dependencies only.

Layers, lowest first; a package imports from lower layers, and from packages listed before it in
its own layer (so within layer 5, ``training`` may use ``inference`` to evaluate its saved model):
"""

import ast
import sys
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"
LAYERS = [
    ["errors", "registry", "paths", "_optional", "config", "runtime"],
    ["data", "tokenization", "evaluation", "tracking"],
    ["models"],
    ["tuning", "tasks"],
    ["inference", "masking", "augment", "training"],
    ["prompting", "selection", "export", "search", "explain", "robustness"],
    ["serving", "ui"],
    ["cli", "__main__"],
]
RANK = {name: (layer, place) for layer, names in enumerate(LAYERS) for place, name in enumerate(names)}
# Third-party packages every install has; a module importing anything else at its top needs an extra
# (serving: fastapi, export: onnx) and may be imported lazily, inside the function that needs it.
CORE = {
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "accelerate",
    "peft",
    "gguf",
    "pydantic",
    "pydantic_core",
    "yaml",
    "numpy",
    "sklearn",
    "pycrfsuite",
    "tqdm",
    "matplotlib",
    "tensorboard",
    "optuna",
    "captum",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "lmforge").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(module: str, path: Path):
    """(target module, inside a function?, line) for every lmforge import of ``module``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in child.names]
            for name in names:
                while name not in MODULES and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in MODULES and name != module:
                    yield name, inside, child.lineno
            yield from visit(child, inside)

    yield from visit(tree, False)


def _graph() -> dict[str, set[str]]:
    """Module -> the modules importing it runs, parent packages' ``__init__`` included."""
    edges = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, _, _ in _imports(module, path):
            edges[module].add(target)
            parts = target.split(".")
            for i in range(2, len(parts)):  # importing a.b.c runs a.b's __init__ first
                parent = ".".join(parts[:i])
                if parent != module and not module.startswith(parent + "."):
                    edges[module].add(parent)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    sys.setrecursionlimit(10000)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(edges):
        if v not in index:
            connect(v)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lmforge"


def test_no_import_cycle_between_modules():
    assert _cycles(_graph()) == []


def test_no_import_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        for target in targets:
            if _package(target) != _package(module) and _package(target) != "lmforge":
                packages.setdefault(_package(module), set()).add(_package(target))
    assert _cycles(packages) == []


def test_every_package_has_a_layer():
    packages = {_package(m) for m in MODULES} - {"lmforge"}
    assert packages <= set(RANK), f"place {sorted(packages - set(RANK))} in LAYERS (and DESIGN.md)"


def test_imports_go_down_the_layers():
    wrong = []
    for module, path in MODULES.items():
        source = _package(module)
        for target, _, line in _imports(module, path):
            dest = _package(target)
            if dest in (source, "lmforge") or source == "lmforge":
                continue
            if RANK[dest] >= RANK[source]:
                wrong.append(f"{path.relative_to(SRC)}:{line}: {source} (layer {RANK[source][0] + 1}) imports {target}")
    assert wrong == []


def _needs_extra(module: str) -> bool:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in tree.body:
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else ([node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
        )
        for name in names:
            top = name.split(".")[0]
            if top not in CORE and top != "lmforge" and top not in sys.stdlib_module_names:
                return True
    return False


def test_function_level_imports_are_for_optional_dependencies_only():
    wrong = [
        f"{path.relative_to(SRC)}:{line}: imports {target} inside a function"
        for module, path in MODULES.items()
        for target, inside, line in _imports(module, path)
        if inside and not _needs_extra(target)
    ]
    assert wrong == []
