"""The package's layers: imports point one way, no cycles, light modules stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geochange"

#: Layer of each part, lowest first: a module may import its own layer or lower ones only.
LAYERS: dict[str, int] = {
    "geochange._version": 0,
    "geochange._lazy": 0,
    "geochange.errors": 0,
    "geochange.grid": 0,
    "geochange.shift": 0,
    "geochange.bands": 0,
    "geochange.palette": 0,
    "geochange.dates": 0,
    "geochange.robust": 0,
    "geochange.events": 0,
    "geochange.io": 1,
    "geochange.tiling": 1,
    "geochange.memory": 1,
    "geochange.vectorize": 1,
    "geochange.cluster": 1,
    "geochange.synth": 1,
    "geochange.model": 2,
    "geochange.stages": 2,
    "geochange.evaluate": 2,
    "geochange.plots": 2,
    "geochange.config": 3,
    "geochange.prepare": 3,
    "geochange.plan": 3,
    "geochange.record": 3,
    "geochange.windowed": 3,
    "geochange.pipeline": 3,
    "geochange.cli": 4,
    "geochange": 5,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _imports(path: Path) -> set[str]:
    """geochange modules imported by a file (anywhere in it, but not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in node.body
        for n in ast.walk(child)
    }
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path.parent)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("geochange")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if not base.startswith("geochange"):
                continue
            for alias in node.names:  # `from geochange.stages import refine` imports a module
                sub = f"{base}.{alias.name}"
                found.add(sub if _is_module(sub) else base)
    return found


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").exists() or (
        PACKAGE.parent / rel / "__init__.py"
    ).exists()


def _graph() -> dict[str, set[str]]:
    return {
        _module_name(p): {m for m in _imports(p) if m != _module_name(p)}
        for p in PACKAGE.rglob("*.py")
    }


def test_imports_point_down_the_layers() -> None:
    wrong = [
        f"{mod} (layer {_layer(mod)}) imports {dep} (layer {_layer(dep)})"
        for mod, deps in sorted(_graph().items())
        for dep in sorted(deps)
        if _layer(dep) > _layer(mod)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_checker_sees_a_wrong_arrow() -> None:
    """The layer check itself can fail: io importing the pipeline would be caught."""
    assert _layer("geochange.io.stack") < _layer("geochange.pipeline")
    assert "geochange.stages.coregister" in _graph()["geochange.model.scenes"]


HEAVY = ("torch", "rasterio", "geopandas", "pytorch_lightning", "matplotlib")


@pytest.mark.parametrize(
    ("statement", "banned"),
    [
        ("import geochange", HEAVY + ("dask",)),
        ("import geochange.config", HEAVY),
        ("import geochange.stages", HEAVY),
        ("import geochange.model.normalize", HEAVY),
        ("import geochange.shift", HEAVY),
        ("import geochange.dates, geochange.robust, geochange.io.atomic", HEAVY + ("dask",)),
        ("import geochange.evaluate.scoring", HEAVY),
        ("import geochange.tiling", HEAVY),
        ("import geochange.stages.refine, geochange.stages.micro, geochange.stages.emerge", HEAVY),
        ("import geochange.stages.clouds, geochange.stages.baselines", HEAVY),
        (
            "from geochange.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
            ("torch", "pytorch_lightning"),
        ),
    ],
)
def test_light_imports_stay_light(statement: str, banned: tuple[str, ...]) -> None:
    code = (
        f"{statement}\nimport sys\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not set(banned) & set(out), sorted(set(banned) & set(out))
