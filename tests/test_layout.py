"""The repository's layering: the library never reaches into what reproduces the record, and the package's lowest
layer depends on nothing above it."""

import ast
import os

import pytest


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def imported_modules(path: str) -> set[str]:
    """Every module a Python file imports (relative imports as `.name`)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def python_files(folder: str) -> list[str]:
    return [
        os.path.join(root, name)
        for root, _, names in os.walk(os.path.join(REPO, folder))
        for name in names
        if name.endswith(".py")
    ]


@pytest.mark.parametrize("folder", ["training", "modeling_deer"])
def test_the_library_never_imports_the_experiments(folder):
    files = python_files(folder)
    assert files
    for path in files:
        assert not any(name.split(".")[0] == "experiments" for name in imported_modules(path)), path


def test_the_package_never_imports_the_commands():
    for path in python_files("modeling_deer"):
        assert not any(name.split(".")[0] == "training" for name in imported_modules(path)), path


def test_the_configuration_imports_nothing_of_the_package():
    imports = imported_modules(os.path.join(REPO, "modeling_deer", "configuration_deer.py"))
    assert not [name for name in imports if name.startswith(".") or name.startswith("modeling_deer")]


def test_the_draft_has_one_home():
    """Decoding and the objective take the draft from draft_deer.py; the objective does not import decoding."""
    objective = imported_modules(os.path.join(REPO, "modeling_deer", "objective_deer.py"))
    generation = imported_modules(os.path.join(REPO, "modeling_deer", "generation_deer.py"))
    assert ".draft_deer" in objective and ".draft_deer" in generation
    assert ".generation_deer" not in objective
