"""The layout of transforms/ (issue #16), checked from the source alone (pure ast, imports nothing).

Stage packages run in data-flow order (``STAGES``); a module may import its own package, an earlier
stage, or ``transforms`` itself, never a later stage. There is no import cycle between modules
(imports inside functions count: a lazy import still ties the two modules together). No module
imports another module's private (``_name``) attribute. TensorFlow, tf.Transform and ScaNN are
imported at module top and only in the packages that need them (``HEAVY_PACKAGES``); a light package
must not pull them in at import time, not even through another module. The few heavy imports that run
inside functions are listed in ``DEFERRED_HEAVY`` with the reason each is deferred.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "transforms"

# Data-flow order. ``testing`` (generators for tests and benches) may import any light module.
STAGES = ["common", "io", "features", "placement", "index", "search", "scoring", "quality", "clusters",
          "run", "learn"]
HEAVY_ROOTS = ("tensorflow", "tensorflow_transform", "scann")
HEAVY_PACKAGES = {"features", "index", "learn"}

# (module, heavy root) imported inside a function, with why.
DEFERRED_HEAVY = {
    # The launcher builds the embed stage for a --model_dir run without loading the model (workers
    # do, in load_model/setup); TF at module top would cost every launch seconds it does not use.
    ("transforms.features.embed", "tensorflow"): "model loading runs on workers, not the launcher",
    ("transforms.features.raw_inputs", "tensorflow"): "image decoding runs in DoFn.setup on workers",
    # beam_jobs.config imports ModelInput from here; `corpus-match --help` must stay free of TF.
    ("transforms.features.model_signature", "tensorflow"): "read only when --model_dir is given",
    # `import scann` fails under the pinned TF (see index/scann_lib.py): its proto modules import
    # only after load_scann_pybind() has registered the bare package, so inside the function.
    ("transforms.index.scann", "scann"): "importable only after scann_lib registers the package",
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(encoding="utf-8"), str(p))
            for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imports(tree: ast.Module):
    """(imported module, names or None, at module top?) for every import in the module."""
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, [a.name for a in node.names], id(node) in top


def _project_targets(module: str, names: list[str] | None) -> list[tuple[str, str | None]]:
    """The transforms modules an import names, each with the attribute taken from it (or None)."""
    if not module.startswith("transforms"):
        return []
    if names is None:
        return [(module, None)] if module in MODULES else []
    out = []
    for name in names:
        if f"{module}.{name}" in MODULES:  # from pkg import submodule
            out.append((f"{module}.{name}", None))
        elif module in MODULES:
            out.append((module, name))
    return out


def _graph(top_only: bool = False) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, tree in MODULES.items():
        for target, names, at_top in _imports(tree):
            if top_only and not at_top:
                continue
            for dep, _ in _project_targets(target, names):
                if dep != mod:
                    graph[mod].add(dep)
    return graph


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGES) else None


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layering_violations(modules: dict[str, ast.Module]) -> list[str]:
    """Every rule of the module docstring, broken: one line each (empty when the layout holds)."""
    global MODULES
    saved, MODULES = MODULES, modules
    try:
        bad = [f"import cycle: {' <-> '.join(c)}" for c in find_cycles(_graph())]
        for mod, tree in modules.items():
            own = _stage(mod)
            for target, names, at_top in _imports(tree):
                root = target.split(".")[0]
                if root in HEAVY_ROOTS:
                    if own not in HEAVY_PACKAGES:
                        bad.append(f"{mod} imports {target} but {own} is a light package")
                    elif not at_top and (mod, root) not in DEFERRED_HEAVY:
                        bad.append(f"{mod} imports {target} inside a function (not in DEFERRED_HEAVY)")
                for dep, attr in _project_targets(target, names):
                    theirs = _stage(dep)
                    if own in STAGES and theirs in STAGES and STAGES.index(theirs) > STAGES.index(own):
                        bad.append(f"{mod} ({own}) imports the later stage {dep} ({theirs})")
                    if attr is not None and attr.startswith("_") and not attr.startswith("__"):
                        bad.append(f"{mod} imports the private name {dep}.{attr}")
        # A light package's module must not load TF/TFT/ScaNN at import time, even transitively.
        top = _graph(top_only=True)
        heavy_now = {m for m, tree in modules.items()
                     if any(at_top and t.split(".")[0] in HEAVY_ROOTS for t, _, at_top in _imports(tree))}
        changed = True
        while changed:
            changed = False
            for m, deps in top.items():
                if m not in heavy_now and deps & heavy_now:
                    heavy_now.add(m)
                    changed = True
        for m in sorted(heavy_now):
            stage = _stage(m)
            if stage is not None and stage not in HEAVY_PACKAGES:
                bad.append(f"{m} ({stage}, light) imports TensorFlow/tf.Transform/ScaNN at import time")
            if m.count(".") == 1 or m.endswith("__init__"):
                bad.append(f"package {m} imports heavy modules at import time")
        return bad
    finally:
        MODULES = saved


def test_every_module_sits_in_a_stage_package():
    loose = [m for m in MODULES
             if m.count(".") == 1 and m.split(".")[1] not in STAGES + ["testing", "scoring"]]
    assert loose == [], f"modules outside a stage package: {loose}"
    stages = {m.split(".")[1] for m in MODULES if m.count(".") >= 1}
    assert stages <= set(STAGES) | {"testing"}, stages - set(STAGES)


def test_the_layout_holds():
    assert layering_violations(MODULES) == []


def test_deferred_heavy_imports_are_still_there():
    """An entry that no longer matches a function-level import is stale: drop it."""
    found = {(mod, t.split(".")[0]) for mod, tree in MODULES.items()
             for t, _, at_top in _imports(tree) if not at_top and t.split(".")[0] in HEAVY_ROOTS}
    assert set(DEFERRED_HEAVY) <= found, set(DEFERRED_HEAVY) - found


@pytest.mark.parametrize("planted, expected", [
    ({"transforms.common.metrics": "from transforms.io.results import read_matches\n"}, "later stage"),
    ({"transforms.io.files": "from transforms.io.csv import csv_rows\n"}, "import cycle"),
    ({"transforms.search.search": "from transforms.index.neighbor_index import _fetch_count\n"}, "private"),
    ({"transforms.placement.spill": "import tensorflow as tf\n"}, "light package"),
    ({"transforms.run.report": "from transforms.features.preprocess import feature_key\n"}, "import time"),
    ({"transforms.index.build": "def f():\n    import scann\n"}, "inside a function"),
])
def test_a_planted_violation_is_caught(planted, expected):
    modules = dict(MODULES)
    for mod, code in planted.items():
        modules[mod] = ast.Module(body=list(MODULES[mod].body) + ast.parse(code).body, type_ignores=[])
    assert any(expected in line for line in layering_violations(modules))
