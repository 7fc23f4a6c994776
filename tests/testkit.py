"""What several test files share: a notebook's code and exercise solutions, small random episodes, perturbed rules."""
import importlib.util
from pathlib import Path
from types import ModuleType

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def load_solutions(stem: str) -> ModuleType:
    """notebooks/solutions/<stem>.py as a module (the answers to a notebook's exercises)."""
    path = NOTEBOOKS / "solutions" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"solutions_{stem[:2]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cell_defining(notebook: Path, name: str) -> str:
    """The source of the one code cell of `notebook` that defines function `name`."""
    nb = nbformat.read(notebook, as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and f"def {name}(" in c.source]
    assert len(cells) == 1, f"expected one cell defining {name} in {notebook.name}, found {len(cells)}"
    return cells[0]


def exported_cells(path: Path) -> dict:
    """A namespace holding everything the notebook's `#| export` cells define."""
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
