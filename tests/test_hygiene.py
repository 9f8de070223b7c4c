"""What CI claims about the tests themselves: real-data tests are marked slow, and no test
asserts on wall-clock time (a loaded machine must not fail a correct build)."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
NEEDS_DATA = {"needs_cifar", "needs_mnist", "needs_fashion"}
CLOCKS = {"time", "perf_counter", "monotonic", "process_time", "perf_counter_ns", "monotonic_ns", "total_seconds"}


def _functions():
    for path in sorted(TESTS.glob("*.py")):
        tree = ast.parse(path.read_text())
        module_slow = "pytest.mark.slow" in "".join(
            ast.unparse(n) for n in tree.body if isinstance(n, ast.Assign) and "pytestmark" in ast.unparse(n.targets[0])
        )
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.name, node, module_slow


def _reads_clock(node: ast.AST, timed: set[str]) -> bool:
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in CLOCKS:
            return True
        if isinstance(n, ast.Name) and n.id in timed:
            return True
    return False


def test_real_data_tests_are_marked_slow():
    unmarked, checked = [], 0
    for name, fn, module_slow in _functions():
        decorators = [ast.unparse(d) for d in fn.decorator_list]
        if NEEDS_DATA & set(decorators):
            checked += 1
            if not module_slow and "pytest.mark.slow" not in decorators:
                unmarked.append(f"{name}::{fn.name}")
    assert checked >= 4 and unmarked == []


def test_no_assertion_reads_the_clock():
    found = []
    for name, fn, _ in _functions():
        timed: set[str] = set()  # names holding a time read from a clock, directly or derived
        for stmt in ast.walk(fn):
            if isinstance(stmt, ast.Assign) and _reads_clock(stmt.value, timed):
                timed |= {t.id for t in stmt.targets if isinstance(t, ast.Name)}
            elif isinstance(stmt, ast.Assert) and _reads_clock(stmt.test, timed):
                found.append(f"{name}:{stmt.lineno}: {ast.unparse(stmt.test)}")
    assert found == []


def test_results_reach_numpy_through_the_cpu():
    """A job on ``--device cuda`` hands device tensors to its writers: each goes through
    ``to_numpy`` (detach, cpu, numpy), never a bare ``.numpy()``."""
    src = TESTS.parent / "src" / "convlens"
    bare = []
    for folder in ("explain", "analyses"):
        for path in sorted((src / folder).glob("*.py")):
            for n in ast.walk(ast.parse(path.read_text())):
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "numpy":
                    inner = n.func.value
                    on_cpu = isinstance(inner, ast.Call) and getattr(inner.func, "attr", None) in ("cpu", "numpy")
                    if not on_cpu and "cpu()" not in ast.unparse(inner):
                        bare.append(f"{folder}/{path.name}:{n.lineno}: {ast.unparse(n)}")
    assert not bare, "\n".join(bare)


def test_to_numpy_detaches_and_copies_to_the_cpu():
    import numpy as np
    import torch

    from convlens.utils import to_numpy

    class OnDevice:  # a tensor somewhere else: only detach().cpu() gives something numpy reads
        calls: list[str] = []

        def detach(self):
            self.calls.append("detach")
            return self

        def cpu(self):
            self.calls.append("cpu")
            return torch.tensor([1.0, 2.0])

        def numpy(self):
            raise TypeError("can't convert cuda:0 device type tensor to numpy")

    fake = OnDevice()
    assert to_numpy(fake).tolist() == [1.0, 2.0] and fake.calls == ["detach", "cpu"]
    grad = torch.ones(2, requires_grad=True) * 3
    assert np.array_equal(to_numpy(grad), np.array([3.0, 3.0], np.float32))
    assert to_numpy(np.arange(3)).tolist() == [0, 1, 2]
