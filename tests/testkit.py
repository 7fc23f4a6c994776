"""What several test files share: a notebook's code and exercise solutions, small random episodes, perturbed rules.

A notebook cell is tied to the package function it re-derives by ONE visible marker, its first line:

    # package: metalstm.learner.Learner.__call__

(several names: `# package: NAME, NAME`). `notebook_code(path)` runs the notebook's import lines and
then every marked cell, in order, and returns the namespace, so a test can compare the notebook's
version with the package's; `package_cells(path)` lists the marked cells; `package_object(NAME)`
finds what a marker names.
"""
import ast
import importlib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
MARKER = re.compile(r"^# package: (\S.*?)\s*$")


def package_cells(notebook: Path) -> list[tuple[int, list[str], str]]:
    """(cell index, the names its marker gives, its source) for every cell whose first line is
    '# package: NAME[, NAME ...]'."""
    nb = nbformat.read(notebook, as_version=4)
    out = []
    for i, cell in enumerate(nb.cells):
        first = cell.source.split("\n", 1)[0]
        if cell.cell_type == "code" and MARKER.match(first):
            out.append((i, [n.strip() for n in MARKER.match(first).group(1).split(",")], cell.source))
    return out


def without_magics(source: str) -> str:
    """A cell's source without IPython's magics and shell lines (%..., !...)."""
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))


def notebook_code(notebook: Path, *expected: str) -> dict:
    """The namespace of the notebook's import statements (from every code cell) followed by its
    cells marked '# package: ...', executed in order. `expected` are names the marked cells must
    define (the test then fails with a clear message if the notebook stops defining one)."""
    import torch

    nb = nbformat.read(notebook, as_version=4)
    imports = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            tree = ast.parse(without_magics(cell.source))
            imports += [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    namespace: dict = {}
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    try:
        exec(compile(ast.Module(body=imports, type_ignores=[]), f"{notebook.name}:imports", "exec"), namespace)
        for i, names, source in package_cells(notebook):
            exec(compile(without_magics(source), f"{notebook.name}[cell {i}: {', '.join(names)}]", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
    missing = [name for name in expected if name not in namespace]
    assert not missing, f"{notebook.name}: no cell marked '# package: ...' defines {missing}"
    return namespace


def package_object(name: str):
    """What a marker names: 'metalstm.learner.Learner.__call__' -> that function."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module in {name!r}")


def check_markers(notebook: Path) -> list[str]:
    """Assert that the notebook has marked cells, that every name they give exists, and that the
    notebook prints the source of every metalstm function it names (inspect.getsource); return the names."""
    cells = package_cells(notebook)
    assert cells, f"{notebook.name} has no cell marked '# package: ...'"
    names = [n for _, ns, _ in cells for n in ns]
    for name in names:
        package_object(name)                      # raises if the marker names nothing
    nb = nbformat.read(notebook, as_version=4)
    shown = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and "inspect.getsource" in c.source)
    hidden = [n for n in names if n.startswith("metalstm.") and ".".join(n.split(".")[-2:]) not in shown
              and n.split(".")[-1] not in shown]
    assert not hidden, f"{notebook.name} does not show the package source of {hidden} (inspect.getsource)"
    sources = "\n".join(c.source for c in nb.cells)
    assert "#| export" not in sources and not any("define" in c.metadata.get("tags", []) for c in nb.cells), \
        f"{notebook.name} still uses an old marker ('#| export' or a 'define' tag)"
    return names


def load_solutions(stem: str) -> ModuleType:
    """notebooks/solutions/<stem>.py as a module (the answers to a notebook's exercises)."""
    path = NOTEBOOKS / "solutions" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"solutions_{stem[:2]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cell_defining(notebook: Path, name: str) -> str:
    """The source of the one code cell of `notebook` that defines function `name`
    (notebook 06's tests, until it carries '# package:' markers; then use notebook_code)."""
    nb = nbformat.read(notebook, as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and f"def {name}(" in c.source]
    assert len(cells) == 1, f"expected one cell defining {name} in {notebook.name}, found {len(cells)}"
    return cells[0]


def exported_cells(path: Path) -> dict:
    """A namespace holding everything the notebook's `#| export` cells define
    (notebook 05's tests, until it carries '# package:' markers; then use notebook_code)."""
    nb = nbformat.read(path, as_version=4)
    sources = [c.source for c in nb.cells if c.cell_type == "code" and c.source.startswith("#| export")]
    assert sources, f"no '#| export' cells in {path.name}"
    namespace: dict = {}
    for k, source in enumerate(sources):
        exec(compile(source, f"{path.name}:export{k}", "exec"), namespace)
    return namespace


def perturb_rule_(meta, seed: int, scale: float = 0.5):
    """Add seeded noise to a meta-learner's update-rule weights (not c_0), in place, so that
    its gates differ between coordinates, steps and episodes as a trained one's do."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in meta.rule_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return meta


def random_episode(n_way=5, k_shot=5, n_query=3, size=28, channels=1, seed=0):
    """An episode of uniform-noise images with labels grouped as EpisodeSampler groups them."""
    import torch

    from metalstm.episodes import Episode

    g = torch.Generator().manual_seed(seed)
    return Episode(torch.rand(n_way * k_shot, channels, size, size, generator=g),
                   torch.arange(n_way).repeat_interleave(k_shot),
                   torch.rand(n_way * n_query, channels, size, size, generator=g),
                   torch.arange(n_way).repeat_interleave(n_query), torch.arange(n_way))
