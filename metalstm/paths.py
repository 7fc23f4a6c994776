"""Where the course's data files are: the one place that knows the folder layout.

The shipped files (the glyph arrays, data/checkpoints/, data/results/) live in
the repository's data/ folder, next to the package. An installed package
(`pip install .`, not editable) has no such folder beside it; then the
environment variable METALSTM_DATA names the folder that holds them:

    export METALSTM_DATA=/path/to/metalstm/data
"""
from __future__ import annotations

import os
from pathlib import Path

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
