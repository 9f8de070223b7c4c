"""Imports point one way (ARCHITECTURE.md): a low layer never reaches up, not even inside a function.

Every ``import`` statement of a file is read with ``ast`` (module level, inside functions and under
``TYPE_CHECKING`` alike) and resolved to the convlens module it names."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "convlens"

# what each low layer may import from convlens: the layer itself and the layers below it
ALLOWED = {
    # paths and documents of a run folder; config.py is the type of its config.yaml
    "run": {"run", "errors", "utils", "config"},
    # the table of layer kinds, builders, graphs: no run folders, no training, no data
    "models": {"models", "errors", "utils", "trace"},
    # the checkpoint file format
    "checkpoint.py": {"errors", "utils"},
    # a run folder's model and data: below training, the jobs and the report
    "runload.py": {"runload", "run", "models", "data", "checkpoint", "errors", "utils", "config"},
}


def convlens_imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, dotted convlens module)`` of every import in ``source``, the file of ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
            else:
                base = ""
            target = ".".join(p for p in (base, node.module) if p)
            if node.module is None:  # `from .. import x`: x may be a module
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, name) for line, name in found if name == "convlens" or name.startswith("convlens.")]


def _layer(name: str) -> str:
    """``convlens.run.folder`` -> ``run``; ``convlens.runload`` -> ``runload``; the package's own
    ``__init__`` (``convlens``, ``convlens.__version__``) -> ``""``, which imports nothing."""
    part = name.split(".")[1] if "." in name else ""
    return part if (SRC / part).is_dir() or (SRC / f"{part}.py").is_file() else ""


def _files(key: str) -> list[Path]:
    return sorted((SRC / key).rglob("*.py")) if (SRC / key).is_dir() else [SRC / key]


@pytest.mark.parametrize("key", sorted(ALLOWED))
def test_low_layers_import_nothing_above_them(key):
    allowed = {a.removesuffix(".py") for a in ALLOWED[key]} | {""}
    wrong = []
    for path in _files(key):
        rel = path.relative_to(SRC.parent).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parent.parts if is_package else rel.parts)
        for line, name in convlens_imports(path.read_text(), module, is_package):
            if _layer(name) not in allowed:
                wrong.append(f"{path.relative_to(SRC.parent)}:{line} imports {name}")
    assert not wrong, f"{key} may import only {sorted(allowed)}:\n" + "\n".join(wrong)


def test_the_reader_finds_an_import_hidden_in_a_function():
    source = (
        "from ..errors import RunError\n"
        "def f():\n"
        "    from ..train.checkpoint import load\n"
        "    from .. import results\n"
        "    import convlens.data\n"
        "    from .. import __version__\n"
    )
    found = sorted(convlens_imports(source, "convlens.run.folder"))
    assert found == [
        (1, "convlens.errors"),
        (3, "convlens.train.checkpoint"),
        (4, "convlens.results"),
        (5, "convlens.data"),
        (6, "convlens.__version__"),
    ]
    assert [_layer(n) for _, n in found] == ["errors", "train", "results", "data", ""]
    # a package's own __init__ resolves relative imports from itself
    assert convlens_imports("from .folder import Run", "convlens.run", is_package=True) == [(1, "convlens.run.folder")]
