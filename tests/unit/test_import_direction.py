"""Imports point one way: cli -> experiments -> pipeline -> stages/data_modules/callbacks -> clustering
-> models -> data -> config -> utils. A module may import its own package, a lower layer, never a higher
one, and never a sibling package of its own layer (a callback does not import a stage)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the installed name of each source folder (setup.cfg's package_dir)
FOLDERS = {"src": "cofee", "data_modules": "cofee.data_modules", "callbacks": "cofee.callbacks"}
LAYERS = [
    ["cofee.utils"],
    ["cofee.config"],
    ["cofee.data"],
    ["cofee.models"],
    ["cofee.clustering"],
    ["cofee.stages", "cofee.data_modules", "cofee.callbacks"],
    ["cofee.pipeline"],
    ["cofee.experiments"],
    ["cofee.cli"],
]


def package_of(module: str) -> str | None:
    """The layered package a module belongs to (longest match), or None for `cofee` itself."""
    best = None
    for layer in LAYERS:
        for package in layer:
            if (module == package or module.startswith(package + ".")) and (
                best is None or len(package) > len(best)
            ):
                best = package
    return best


def rank(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def modules():
    for folder, name in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield path, ".".join((name, *parts))


def imported(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # `from cofee.data import tagging` imports cofee.data.tagging
                yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def violations():
    found = []
    for path, module in modules():
        source = package_of(module)
        if source is None:  # the package root registers Hydra resolvers; it is no layer
            continue
        for line, target_module in imported(path):
            if not target_module.startswith("cofee."):
                continue
            target = package_of(target_module)
            if target is None or target == source:
                continue
            if rank(target) > rank(source) or (rank(target) == rank(source)):
                found.append(f"{path.relative_to(ROOT)}:{line}: {source} imports {target_module}")
    return sorted(set(found))


def test_every_module_belongs_to_a_layer():
    unplaced = [m for _, m in modules() if m != "cofee" and package_of(m) is None]
    assert unplaced == []


def test_imports_point_down_the_layers():
    assert violations() == []


@pytest.mark.parametrize(
    "source, target, allowed",
    [("cofee.cli", "cofee.pipeline", True), ("cofee.models", "cofee.stages", False)],
)
def test_rank_orders_the_layers(source, target, allowed):
    assert (rank(target) < rank(source)) is allowed
