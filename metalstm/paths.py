"""Where the course's data files are: the one place that knows the folder layout.

The shipped files (the glyph arrays, data/checkpoints/, data/results/) live in
the repository's data/ folder, next to the package. An installed package
(`pip install .`, not editable) has no such folder beside it; then the
environment variable METALSTM_DATA names the folder that holds them:

    export METALSTM_DATA=/path/to/metalstm/data

The shipped checkpoints are data/checkpoints/<config>.pt (the Meta-Learner
LSTM) and data/checkpoints/ladder/<config>-<rung>.pt (`shipped_checkpoint`).
"""
from __future__ import annotations

import os
from pathlib import Path

from metalstm.config import RUNGS

ENV = "METALSTM_DATA"
CHECKOUT = Path(__file__).resolve().parent.parent     # the folder that holds metalstm/ in a checkout


def data_dir() -> Path:
    """The data folder: $METALSTM_DATA when set, else the checkout's data/ beside the package."""
    if os.environ.get(ENV):
        folder = Path(os.environ[ENV]).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"${ENV} is {os.environ[ENV]!r}, which is not a folder; point it "
                                    "to the folder that holds glyphs-v1.npz (the repository's data/)")
        return folder
    folder = CHECKOUT / "data"
    if folder.is_dir():
        return folder
    raise FileNotFoundError(
        f"no data folder: {folder} does not exist (the package is installed, not run from a "
        f"checkout). Set {ENV} to the folder that holds glyphs-v1.npz, checkpoints/ and results/ "
        f"(the data/ folder of the course repository), e.g. export {ENV}=/path/to/metalstm/data")


def shipped_checkpoint(config_name: str, root: str | os.PathLike | None = None,
                       rung: str | None = None) -> Path:
    """Path of a shipped checkpoint: data/checkpoints/<config_name>.pt (the Meta-Learner LSTM),
    or with `rung` (a rung of the ladder, metalstm.rules.RUNGS) data/checkpoints/ladder/
    <config_name>-<rung>.pt.

    root: a folder to look in instead; by default $METALSTM_CHECKPOINTS when set
    (for testing with your own short-trained checkpoints; rungs in its ladder/), else the
    repository's data/checkpoints. A missing file raises one FileNotFoundError that says how to train it.
    """
    if rung is not None and rung not in RUNGS:
        raise ValueError(f"unknown rung {rung!r}; the ladder is: {', '.join(RUNGS)}")
    from_env = root is None and bool(os.environ.get("METALSTM_CHECKPOINTS"))
    folder = Path(root or os.environ.get("METALSTM_CHECKPOINTS")
                  or data_dir() / "checkpoints")
    if rung is None:
        path, run, flags = folder / f"{config_name}.pt", config_name, ""
    else:
        path, run = folder / "ladder" / f"{config_name}-{rung}.pt", f"{config_name}-{rung}"
        flags = f" --rule {rung} --episodes 2000"
    if not path.is_file():
        where = " (the folder named by $METALSTM_CHECKPOINTS)" if from_env else ""
        raise FileNotFoundError(
            f"no checkpoint {path}{where}. Train it (about half an hour on a 2-core CPU) with\n"
            f"    python -m metalstm.train --config {config_name}{flags} --out runs/{run}\n"
            f"and copy runs/{run}/best.pt to {path}")
    return path


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint named by a path or by a shipped run's name: `path` itself when it exists or
    looks like a file ("runs/x/best.pt", "my.pt"); a bare name ("glyphs-5shot") is the shipped
    checkpoint of that name (`shipped_checkpoint`)."""
    p = Path(path).expanduser()
    if p.exists() or p.suffix or len(p.parts) > 1:
        return p
    return shipped_checkpoint(p.name)
