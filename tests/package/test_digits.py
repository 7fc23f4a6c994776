"""The handwritten digits: a meta-test-only second domain (metalstm/data/digits.py, data/README.md)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metalstm import paths
from metalstm.data import ImageSet, load_dataset
from metalstm.data import digits
from metalstm.episodes import EpisodeSampler
from metalstm.tools import build_digits

PER_CLASS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]   # UCI optdigits.tes


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits", "test")


@pytest.fixture
def copy_dir(tmp_path):
    """A copy of the shipped digit files in tmp_path."""
    for path in digits.paths():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


# -- what the loader gives ------------------------------------------------------------
def test_ten_classes_of_28x28_like_the_glyphs(data):
    assert isinstance(data, ImageSet) and data.name == "digits/test"
    assert data.images.dtype == torch.uint8 and data.image_shape == (1, 28, 28)
    assert len(data) == 1797 and data.classes == [str(d) for d in range(10)]
    assert data.class_sizes().tolist() == PER_CLASS
    x = data.images[:, 0].float()
    assert x.max() == 255 and x[:, :5].max() == 0 and x[:, 23:].max() == 0   # ink high on 0,
    assert x[:, :, :5].max() == 0 and x[:, :, 23:].max() == 0                # inside rows/cols 5..22
    pos = torch.arange(28.0)
    mass = x.sum((1, 2))
    centre = torch.stack([(x.sum(2) * pos).sum(1) / mass, (x.sum(1) * pos).sum(1) / mass])
    assert (centre.mean(1) - 13.5).abs().max() < 0.5                         # centred like the glyphs


def test_the_arrays_agree_with_each_other():
    arrays, manifest = digits.read()
    assert manifest["images_per_class"] == PER_CLASS
    assert np.bincount(arrays["labels"], minlength=10).tolist() == PER_CLASS
    assert arrays["images8x8"].max() == 16
    assert np.array_equal(build_digits.to_28x28(arrays["images8x8"]), arrays["images"])


def test_the_transform_is_bilinear_with_zeros_outside_the_frame():
    w = build_digits.interpolation_weights()
    assert w.sum(0).tolist() == [8] * 8                       # each cell spreads over 2 px (in quarters)
    assert w[:5].sum() == 0 and w[23:].sum() == 0 and w[5, 0] == 1 and w[22, 7] == 1  # 1 px fade
    source = digits.read()[0]["images8x8"][:50]
    # torch's bilinear (align_corners=False) on the zero-padded 8x8, scale 2, at rows/cols 4..23
    up = F.interpolate(F.pad(torch.from_numpy(source).double()[:, None], (1, 1, 1, 1)),
                       scale_factor=2, mode="bilinear", align_corners=False)[:, 0] * 255 / 16
    ref = torch.zeros(50, 28, 28, dtype=torch.float64)
    ref[:, 4:24, 4:24] = up
    mine = torch.from_numpy(build_digits.to_28x28(source)).double()
    assert (mine - ref).abs().max() <= 0.5
    assert torch.equal(mine, torch.floor(ref + 0.5))           # rounded half up
    full = np.full((1, 8, 8), 16, dtype=np.uint8)
    assert (build_digits.to_28x28(full)[0, 7:21, 7:21] == 255).all()


# -- the checksum ----------------------------------------------------------------------
def test_a_changed_pixel_is_refused(copy_dir):
    arrays, manifest = digits.read()
    arrays = dict(arrays, images=arrays["images"].copy())
    arrays["images"][100, 14, 14] ^= 1                        # one bit of one pixel
    npz, _ = digits.paths(copy_dir)
    npz.write_bytes(build_digits.file_bytes(arrays, manifest)[0])  # a valid file, wrong bytes
    with pytest.raises(ValueError) as e:
        digits.load_digits("test", data_dir=copy_dir)
    msg = str(e.value)
    assert "damaged" in msg and "'images'" in msg and "git checkout" in msg


def test_a_flipped_byte_of_the_file_is_refused(copy_dir):
    npz, _ = digits.paths(copy_dir)
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    npz.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged"):
        digits.load_digits("test", data_dir=copy_dir)


def test_a_missing_file_says_how_to_restore_it(copy_dir):
    digits.paths(copy_dir)[1].unlink()
    with pytest.raises(FileNotFoundError, match="build_digits"):
        digits.load_digits("test", data_dir=copy_dir)


@pytest.mark.slow
def test_found_where_the_glyphs_are_also_when_installed(copy_dir, tmp_path, monkeypatch):
    """The data folder is metalstm.paths.data_dir(): $METALSTM_DATA moves it, and a copy of the
    package away from the checkout (as `pip install .` puts it) loads the digits with it."""
    monkeypatch.setenv(paths.ENV, str(copy_dir))
    assert digits.paths()[0] == copy_dir / "digits-v1.npz"
    assert load_dataset("digits", "test").class_sizes().tolist() == PER_CLASS
    site = tmp_path / "site"
    shutil.copytree(Path(digits.__file__).parents[1], site / "metalstm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1", **{paths.ENV: str(copy_dir)})
    script = ("import metalstm; from metalstm.data import load_dataset; "
              "print(metalstm.__file__); print(len(load_dataset('digits', 'test')))")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    where, count = done.stdout.split()
    assert Path(where).is_relative_to(site) and count == "1797"


# -- what it refuses ----------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "val"])
def test_meta_train_and_meta_val_are_refused(split):
    with pytest.raises(ValueError) as e:
        load_dataset("digits", split)
    msg = str(e.value)
    assert "meta-test-only" in msg and repr(split) in msg and "'test'" in msg
    assert e.value.__cause__ is None and e.value.__context__ is None   # one error, not a chain


@pytest.mark.parametrize("n_way, k_shot, n_query, words", [
    (11, 1, 15, ["11-way", "digits/test", "only 10 classes"]),
    (10, 160, 15, ["175 images per class", "only 9 classes", "smallest class has 174"]),
    (5, 170, 15, ["185 images per class", "only 0 classes", "largest 183"]),
])
def test_episodes_it_cannot_serve_give_one_clear_error(data, n_way, k_shot, n_query, words):
    with pytest.raises(ValueError) as e:
        EpisodeSampler(data, n_way, k_shot, n_query)
    for w in words:
        assert w in str(e.value)
    assert e.value.__context__ is None


def test_episodes_5_way_5_shot_15_query(data):
    sampler = EpisodeSampler(data, 5, 5, 15, seed=0)
    for ep in sampler.take(3):
        assert ep.support_x.shape == (25, 1, 28, 28) and ep.query_x.shape == (75, 1, 28, 28)
        assert ep.support_y.tolist() == [c for c in range(5) for _ in range(5)]
        assert ep.query_y.tolist() == [c for c in range(5) for _ in range(15)]
        assert len(set(ep.classes.tolist())) == 5 and ep.classes.max() < 10
        assert 0.0 <= ep.support_x.min() and ep.query_x.max() <= 1.0
        for x, y in ((ep.support_x, ep.support_y), (ep.query_x, ep.query_y)):
            for j, c in enumerate(ep.classes.tolist()):      # the images are of the named class
                pool = data.images[data.indices_of(c)].float() / 255
                hits = (x[y == j][:, None] == pool[None]).flatten(2).all(-1).any(-1)
                assert hits.all()
    assert torch.equal(sampler[1].query_x, EpisodeSampler(data, 5, 5, 15, seed=0)[1].query_x)


# -- the converter -------------------------------------------------------------------
def csv_source():
    """scikit-learn's digits.csv.gz (or its wheel) if this machine has it: $METALSTM_DIGITS_SOURCE,
    or an installed scikit-learn's copy."""
    path = os.environ.get("METALSTM_DIGITS_SOURCE")
    return Path(path) if path else build_digits.installed_csv()


def test_the_converter_rebuilds_the_shipped_files_byte_for_byte():
    source = csv_source()
    if source is None:
        pytest.skip("no digits.csv.gz here (set METALSTM_DIGITS_SOURCE to it or to a "
                    "scikit-learn wheel, see data/README.md)")
    arrays, manifest = build_digits.build(build_digits.read_csv_text(source))
    npz, js = build_digits.file_bytes(arrays, manifest)
    shipped_npz, shipped_js = digits.paths()
    assert js == shipped_js.read_bytes()
    assert npz == shipped_npz.read_bytes()


def test_the_converter_refuses_another_csv(tmp_path):
    fake = tmp_path / "digits.csv"
    fake.write_text(",".join(["0"] * 64) + ",3\n")
    with pytest.raises(ValueError, match="sha256"):
        build_digits.build(build_digits.read_csv_text(fake))
