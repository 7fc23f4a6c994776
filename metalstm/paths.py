"""Where the course's files are: the one place that knows the folder layout.

The shipped files (the glyph and digit arrays, checkpoints/, results/) live in
the repository's data/ folder. `data_dir()` looks for them in this order:

1. $METALSTM_DATA, when set: a folder laid out like data/ (your own copy, or
   other arrays of the same names);
2. the checkout's data/, beside the package (an editable install, or a run
   from the repository);
3. the installed data package `metalstm_data`: `pip install .` (not editable)
   installs data/ under that name beside `metalstm`, so an installed package
   finds its data from any folder.

The shipped checkpoints are checkpoints/<config>.pt (the Meta-Learner LSTM) and
checkpoints/ladder/<config>-<rung>.pt (`shipped_checkpoint`); a bare name such
as "glyphs-5shot" is one of them (`checkpoint_path`).

What the package computes and keeps for later (trained baselines, the compiled
C loops) goes to `cache_dir()`: $METALSTM_CACHE, else the user's cache folder
(platformdirs: ~/.cache/metalstm on Linux), never the current folder.
"""
from __future__ import annotations

import os
import importlib.util
from pathlib import Path

from metalstm.config import RUNGS

ENV = "METALSTM_DATA"
CACHE_ENV = "METALSTM_CACHE"
DATA_PACKAGE = "metalstm_data"                          # data/ as installed by pip (pyproject.toml)
CHECKOUT = Path(__file__).resolve().parent.parent     # the folder that holds metalstm/ in a checkout
MARKER = "glyphs-v1.npz"                                # a data folder holds this file


def installed_data() -> Path | None:
    """The folder of the installed data package `metalstm_data` (data/ has no __init__.py: a
    namespace package, so each of its folders on sys.path is tried for the data), or None when
    it is not installed (a checkout) or not a plain folder (a zipped install)."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / MARKER).is_file():
            return Path(folder)
    return None


def data_dir() -> Path:
    """The data folder: $METALSTM_DATA when set, else the checkout's data/ beside the package,
    else the installed data package; one FileNotFoundError that names METALSTM_DATA when none."""
    if os.environ.get(ENV):
        folder = Path(os.environ[ENV]).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"${ENV} is {os.environ[ENV]!r}, which is not a folder; point it "
                                    f"to the folder that holds {MARKER} (the repository's data/)")
        return folder
    folder = CHECKOUT / "data"
    if (folder / MARKER).is_file():
        return folder
    installed = installed_data()
    if installed is not None:
        return installed
    raise FileNotFoundError(
        f"no data folder: {folder} does not exist and the data package {DATA_PACKAGE} is not "
        f"installed. Set {ENV} to the folder that holds {MARKER}, checkpoints/ and results/ "
        f"(the data/ folder of the course repository), e.g. export {ENV}=/path/to/metalstm/data")


def cache_dir(*parts: str) -> Path:
    """The folder for what the package computes once and keeps (trained baselines, built
    libraries), joined with `parts`: $METALSTM_CACHE when set, else the user's cache folder
    (platformdirs.user_cache_dir("metalstm"); without platformdirs $XDG_CACHE_HOME/metalstm or
    ~/.cache/metalstm). Not created here: whoever writes into it creates it."""
    if os.environ.get(CACHE_ENV):
        base = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        try:
            from platformdirs import user_cache_dir
        except ImportError:
            base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "metalstm"
        else:
            base = Path(user_cache_dir("metalstm", appauthor=False))
    return base.joinpath(*parts)


def shipped_checkpoint(config_name: str, root: str | os.PathLike | None = None,
                       rung: str | None = None) -> Path:
    """Path of a shipped checkpoint: checkpoints/<config_name>.pt of the data folder (the
    Meta-Learner LSTM), or with `rung` (a rung of the ladder, metalstm.rules.RUNGS)
    checkpoints/ladder/<config_name>-<rung>.pt.

    root: a folder to look in instead; by default $METALSTM_CHECKPOINTS when set
    (for testing with your own short-trained checkpoints; rungs in its ladder/), else
    data_dir()/checkpoints. A missing file raises one FileNotFoundError that says how to train it.
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


def shipped_names(root: str | os.PathLike | None = None) -> list[str]:
    """The names `checkpoint_path` takes: the Meta-Learner LSTM runs (checkpoints/NAME.pt, e.g.
    "glyphs-5shot") and the ladder's rungs (checkpoints/ladder/NAME.pt, e.g. "glyphs-5shot-sgd"),
    in root (default: $METALSTM_CHECKPOINTS, else data_dir()/checkpoints)."""
    folder = Path(root or os.environ.get("METALSTM_CHECKPOINTS") or data_dir() / "checkpoints")
    return [p.stem for p in sorted(folder.glob("*.pt"))] + [p.stem for p in sorted(folder.glob("ladder/*.pt"))]


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint named by a path or by a shipped run's name: `path` itself when it exists or
    looks like a file ("runs/x/best.pt", "my.pt"); a bare name is a shipped checkpoint
    (`shipped_names`: "glyphs-5shot", or a rung of the ladder such as "glyphs-5shot-sgd").
    A bare name that is none of them raises one FileNotFoundError: for a configuration's name,
    how to train it (`shipped_checkpoint`); else the shipped names."""
    p = Path(path).expanduser()
    if p.exists() or p.suffix or len(p.parts) > 1:
        return p
    folder = Path(os.environ.get("METALSTM_CHECKPOINTS") or data_dir() / "checkpoints")
    for candidate in (folder / f"{p.name}.pt", folder / "ladder" / f"{p.name}.pt"):
        if candidate.is_file():
            return candidate
    from metalstm.config import CONFIGS
    if p.name in CONFIGS:
        return shipped_checkpoint(p.name)                 # raises: how to train it
    raise FileNotFoundError(f"no checkpoint {str(path)!r}: not a file, nor the name of a shipped "
                            f"checkpoint ({', '.join(shipped_names(folder)) or 'none in ' + str(folder)})")
