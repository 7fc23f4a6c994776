"""The package's import structure: every module imports on its own, no cycles, tools beside the
teaching modules (never imported by them), nothing imports the training script for a helper."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import metalstm

PKG = Path(metalstm.__file__).resolve().parent
TOOLS = "metalstm.tools"
TRAIN = "metalstm.train"


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}
IMPORTABLE = sorted(m for m in MODULES if not m.endswith(".__main__"))   # __main__ runs a CLI


def is_tool(name: str) -> bool:
    return name == TOOLS or name.startswith(TOOLS + ".")


def imported_modules(name: str, path: Path) -> set[str]:
    """The package modules that module `name` imports anywhere in its file (lazy imports too).

    `from metalstm.x import y` is an edge to metalstm.x.y when that is a module, else to
    metalstm.x; `import metalstm.x.y` an edge to metalstm.x.y. Importing a module runs its
    packages' __init__ first, so an edge to metalstm.x.y is also one to metalstm.x, unless `name`
    is itself inside metalstm.x (then that __init__ has already begun: no cycle through it).
    """
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:                                   # relative: from . import x
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                targets.add(sub if sub in MODULES else module)
    edges = set()
    for target in targets:
        parts = target.split(".")
        for end in range(len(parts), 0, -1):
            package = ".".join(parts[:end])
            if end < len(parts) and name.startswith(package + "."):
                break                                    # name lives inside this package
            edges.add(package)
    return {t for t in edges if t in MODULES and t != name}


def import_graph() -> dict[str, set[str]]:
    return {name: imported_modules(name, path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}            # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_a_real_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    # a sibling inside the package: only the module; from outside: the package's __init__ too
    assert imported_modules("metalstm.data.glyphs", MODULES["metalstm.data.glyphs"]) == {"metalstm.data.base",
                                                                                        "metalstm.paths"}
    assert imported_modules("metalstm.episodes", MODULES["metalstm.episodes"]) == {"metalstm.data.base",
                                                                                  "metalstm.data"}


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "metalstm.episodes" in graph and "metalstm.tools.bench" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_teaching_modules_never_import_the_tools():
    wrong = {name: sorted(t for t in targets if is_tool(t))
             for name, targets in import_graph().items() if not is_tool(name)}
    assert not {name: t for name, t in wrong.items() if t}


def test_nothing_imports_the_training_script_for_a_helper():
    users = sorted(name for name, targets in import_graph().items()
                   if TRAIN in targets and not is_tool(name))
    assert users == ["metalstm.check"]      # an exercise check compares an answer with train() itself


# Run in a fresh interpreter: torch and numpy are imported once, then every package module is
# imported in a forked child that holds no metalstm module yet (so each one imports on its own,
# without paying torch's import 40 times). Each child also reports whether torchvision came along.
CHECK = r"""
import importlib, os, sys, traceback
import numpy, torch
failed, vision = [], []
for name in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            os.write(write, b"v" if "torchvision" in sys.modules else b"-")
            code = 0
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)
    os.close(write)
    seen = os.read(read, 1)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed.append(name)
    elif seen == b"v":
        vision.append(name)
print("FAILED " + " ".join(failed))
print("TORCHVISION " + " ".join(vision))
"""


@pytest.fixture(scope="module")
def fresh_imports() -> tuple[set[str], set[str], str]:
    """(modules that failed to import on their own, modules that imported torchvision, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    if not hasattr(os, "fork"):                              # no fork: one interpreter per module
        failed, vision, err = set(), set(), ""
        for name in IMPORTABLE:
            run = subprocess.run([sys.executable, "-c", f"import sys, {name}; "
                                  "print('torchvision' in sys.modules)"],
                                 capture_output=True, text=True, env=env, cwd=PKG.parent)
            if run.returncode:
                failed.add(name)
                err += run.stderr
            elif run.stdout.strip() == "True":
                vision.add(name)
        return failed, vision, err
    run = subprocess.run([sys.executable, "-c", CHECK, *IMPORTABLE], capture_output=True, text=True,
                         env=env, cwd=PKG.parent, timeout=600)
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line)
    return set(lines["FAILED"].split()), set(lines["TORCHVISION"].split()), run.stderr


@pytest.mark.slow
def test_every_module_imports_on_its_own(fresh_imports):
    failed, _, err = fresh_imports
    assert {"metalstm.episodes", "metalstm.metalearner", "metalstm.train", "metalstm.runs",
            "metalstm.fast.fused", "metalstm.tools.grid", "metalstm.viz.plots"} <= set(IMPORTABLE)
    assert not failed, f"these modules fail when imported first: {sorted(failed)}\n{err[-3000:]}"


@pytest.mark.slow
def test_only_the_omniglot_loader_needs_torchvision(fresh_imports):
    _, vision, _ = fresh_imports
    assert "metalstm.episodes" not in vision
    assert not vision, f"these modules import torchvision: {sorted(vision)}"


def module_level_imports(name: str) -> set[str]:
    """The package modules that module `name` imports at its top level (not inside a function)."""
    tree = ast.parse(MODULES[name].read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metalstm"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("metalstm"))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("name", ["metalstm.metalearner", "metalstm.learner"])
def test_the_readable_modules_do_not_load_the_fast_paths(name):
    """metalstm.fast (the fused step and the C loops) is a choice the model makes when it steps
    (Config.path); reading or importing the readable modules never brings it in: not at their top
    level, and not in a fresh interpreter that imports them."""
    assert not any(m == "metalstm.fast" or m.startswith("metalstm.fast.") for m in module_level_imports(name))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", f"import sys, {name}; "
                          "print(sorted(m for m in sys.modules if m.startswith('metalstm.fast')))"],
                         capture_output=True, text=True, env=env, cwd=PKG.parent, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", run.stdout


@pytest.mark.slow
def test_a_fused_step_loads_the_fast_paths_when_it_runs():
    """...and a MetaLearner on the default path (fused) loads them at its first step."""
    script = ("import sys, torch; from metalstm.metalearner import MetaLearner\n"
              "m = MetaLearner(5, hidden=3, theta0=torch.zeros(5))\n"
              "before = 'metalstm.fast.fused' in sys.modules\n"
              "m.step(torch.tensor(1.0), torch.ones(5), m.c0, m.initial_state())\n"
              "print(before, 'metalstm.fast.fused' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=PKG.parent, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True"]
