"""The real-data loaders, each on a small fixture made here with PIL."""
import csv

import pytest
import torch
from PIL import Image, ImageDraw

from metalstm.data import (ImageSet, load_dataset, load_image_folder, load_mini_imagenet,
                           load_omniglot)
from metalstm.data.omniglot import VAL_ALPHABETS


# -- fixtures --------------------------------------------------------------
def stroke_png(path, k):
    """A 105x105 Omniglot-like drawing: black strokes (0) on white (255), mode "1" like the originals."""
    img = Image.new("1", (105, 105), 1)
    d = ImageDraw.Draw(img)
    d.line([(10 + k, 20), (90, 80 - k)], fill=0, width=8)
    d.rectangle([0, 0, 30, 30], fill=0)                     # a dark block in the top-left corner
    img.save(path)


@pytest.fixture
def omniglot_root(tmp_path):
    """torchvision's layout: root/omniglot-py/images_{background,evaluation}/<alphabet>/<character>/*.png"""
    sets = {"images_background": ["Latin", VAL_ALPHABETS[0]], "images_evaluation": ["Tengwar"]}
    for subset, alphabets in sets.items():
        for a in alphabets:
            for c in range(3):
                d = tmp_path / "omniglot-py" / subset / a / f"character{c + 1:02d}"
                d.mkdir(parents=True)
                for k in range(20):
                    stroke_png(d / f"{c:04d}_{k + 1:02d}.png", k)
    return tmp_path


def random_jpeg(path, seed, size):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8)
    Image.fromarray(pixels.numpy(), "RGB").save(path, quality=90)


@pytest.fixture
def mini_root(tmp_path):
    """root/{train,val,test}.csv (filename,label) + root/images/; 3/2/2 classes of 4 odd-sized JPEGs."""
    root = tmp_path / "mini"
    (root / "images").mkdir(parents=True)
    classes = {"train": ["n0300", "n0100", "n0200"], "val": ["n0400", "n0500"], "test": ["n0600", "n0700"]}
    seed = 0
    for split, labels in classes.items():
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "label"])
            for label in labels:
                for k in range(4):
                    name = f"{label}{k:08d}.jpg"
                    random_jpeg(root / "images" / name, seed, (60 + 7 * k, 45 + 11 * k))
                    seed += 1
                    w.writerow([name, label])
    return root


# -- Omniglot --------------------------------------------------------------
def test_omniglot_splits_shapes_and_alphabets(omniglot_root):
    sets = {s: load_omniglot(omniglot_root, s) for s in ("train", "val", "test")}
    for s, data in sets.items():
        assert isinstance(data, ImageSet)
        assert data.images.dtype == torch.uint8 and data.image_shape == (1, 28, 28)
        assert data.num_classes == 3 and len(data) == 60
        assert data.class_sizes().tolist() == [20, 20, 20]
    assert set(sets["train"].alphabets) == {"Latin"}
    assert set(sets["val"].alphabets) == {VAL_ALPHABETS[0]}
    assert set(sets["test"].alphabets) == {"Tengwar"}
    assert sets["train"].classes[0] == "Latin/character01"
    all_classes = [c for d in sets.values() for c in d.classes]
    assert len(set(all_classes)) == 9                        # disjoint meta-splits


def test_omniglot_is_inverted_and_resized(omniglot_root):
    data = load_omniglot(omniglot_root, "train", image_size=35)
    assert data.image_shape == (1, 35, 35)
    img = data.images[0, 0].float()
    assert img[:5, :5].mean() > 250          # the black block of the file is now bright ink
    assert img[-3:, :3].mean() < 5           # the white background is now dark
    assert img.mean() < 128                  # mostly background, like the glyphs


def test_omniglot_missing_gives_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_omniglot(tmp_path, "train")
    msg = str(e.value)
    assert str(tmp_path / "omniglot-py" / "images_background") in msg
    assert "brendenlake/omniglot" in msg and "images_background.zip" in msg


def test_omniglot_bad_arguments(omniglot_root):
    with pytest.raises(ValueError, match="split"):
        load_omniglot(omniglot_root, "meta-train")
    with pytest.raises(ValueError, match="validation alphabets"):
        load_omniglot(omniglot_root, "val", val_alphabets=("Klingon",))


# -- Mini-ImageNet ---------------------------------------------------------
def test_mini_imagenet_shapes_classes_and_order(mini_root):
    data = load_mini_imagenet(mini_root, "train")
    assert data.images.dtype == torch.uint8 and data.image_shape == (3, 84, 84)
    assert data.classes == ["n0300", "n0100", "n0200"]     # first appearance, not sorted
    assert data.targets.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert load_mini_imagenet(mini_root, "val").num_classes == 2
    assert load_mini_imagenet(mini_root, "test", image_size=32).image_shape == (3, 32, 32)


def test_mini_imagenet_pixels_match_a_plain_pil_resize(mini_root):
    data = load_mini_imagenet(mini_root, "val", cache=False)
    name = "n0400" + "00000002.jpg"
    ref = Image.open(mini_root / "images" / name).convert("RGB").resize((84, 84), Image.BILINEAR)
    ref = torch.frombuffer(bytearray(ref.tobytes()), dtype=torch.uint8).view(84, 84, 3).permute(2, 0, 1)
    assert torch.equal(data.images[2], ref)


def test_mini_imagenet_cache_is_reused(mini_root):
    first = load_mini_imagenet(mini_root, "train")
    assert (mini_root / "cache" / "train-84.pt").is_file()
    (mini_root / "images" / "n030000000000.jpg").unlink()   # the cache must not need it
    second = load_mini_imagenet(mini_root, "train")
    assert torch.equal(first.images, second.images) and first.classes == second.classes
    with pytest.raises(FileNotFoundError, match="n030000000000.jpg"):
        load_mini_imagenet(mini_root, "train", cache=False)  # proof that it really is gone


def test_mini_imagenet_cache_follows_the_csv(mini_root):
    load_mini_imagenet(mini_root, "val")
    lines = (mini_root / "val.csv").read_text().splitlines()
    (mini_root / "val.csv").write_text("\n".join(lines[:5]) + "\n")   # header + class n0400 only
    assert load_mini_imagenet(mini_root, "val").classes == ["n0400"]


def test_mini_imagenet_damaged_cache_is_rebuilt(mini_root):
    (mini_root / "cache").mkdir()
    (mini_root / "cache" / "test-84.pt").write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="cache"):
        data = load_mini_imagenet(mini_root, "test")
    assert len(data) == 8


def test_mini_imagenet_clear_errors(mini_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mini_imagenet(tmp_path / "nowhere", "train")
    (mini_root / "test.csv").unlink()
    with pytest.raises(FileNotFoundError, match="test.csv"):
        load_mini_imagenet(mini_root, "test")
    (mini_root / "val.csv").write_text("file,class\na.jpg,n1\n")
    with pytest.raises(ValueError, match="header"):
        load_mini_imagenet(mini_root, "val")
    (mini_root / "val.csv").write_text("filename,label\na.jpg\n")
    with pytest.raises(ValueError, match="line 2"):
        load_mini_imagenet(mini_root, "val")
    (mini_root / "val.csv").write_text("filename,label\nmissing.jpg,n1\n")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_mini_imagenet(mini_root, "val")


# -- folder per class ------------------------------------------------------
def make_folder(root, classes=("cat", "ant", "bee"), n=5):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for k in range(n + c):
            Image.new("RGB", (30 + k, 20), (40 * c, 200, 10 * k)).save(root / name / f"{k}.png")
    (root / "ant" / "notes.txt").write_text("not an image")


def test_image_folder(tmp_path):
    make_folder(tmp_path / "set")
    data = load_image_folder(tmp_path / "set", image_size=16, channels=3)
    assert data.classes == ["ant", "bee", "cat"]               # sorted by name
    assert data.class_sizes().tolist() == [6, 7, 5]
    assert data.image_shape == (3, 16, 16) and data.images.dtype == torch.uint8
    assert data.images[0, 0].float().mean().round() == 40      # ant was drawn with red = 40
    gray = load_image_folder(tmp_path / "set", image_size=8, channels=1, name="mine")
    assert gray.image_shape == (1, 8, 8) and gray.name == "mine"


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        load_image_folder(tmp_path / "absent", 28)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        load_image_folder(tmp_path / "empty", 28)
    (tmp_path / "empty" / "zebra").mkdir()
    with pytest.raises(FileNotFoundError, match="zebra"):
        load_image_folder(tmp_path / "empty", 28)
    with pytest.raises(ValueError, match="channels"):
        load_image_folder(tmp_path / "empty", 28, channels=2)


# -- the registry ----------------------------------------------------------
def test_load_dataset_dispatches(omniglot_root, mini_root, tmp_path):
    assert load_dataset("omniglot", "test", root=omniglot_root).name == "omniglot/test"
    assert load_dataset("mini-imagenet", "val", root=mini_root).image_shape == (3, 84, 84)
    make_folder(tmp_path / "f" / "train")
    data = load_dataset("folder", "train", root=tmp_path / "f", image_size=20)
    assert data.image_shape == (3, 20, 20) and data.num_classes == 3


def test_load_dataset_glyphs_ignores_root_and_can_resize(tmp_path):
    from metalstm.data.glyphs import load_glyphs
    data = load_dataset("glyphs", "val", root=tmp_path / "unused")
    assert torch.equal(data.images, load_glyphs("val").images) and data.name == "glyphs/val"
    small = load_dataset("glyphs", "val", image_size=14)
    assert small.image_shape == (1, 14, 14) and small.images.dtype == torch.uint8
    assert torch.equal(small.targets, data.targets)
    # an antialiased 2x reduction is close to the mean of each 2x2 block
    blocks = data.images[:50].float().view(50, 1, 14, 2, 14, 2).mean((3, 5))
    assert (small.images[:50].float() - blocks).abs().mean() < 8


def test_load_dataset_errors(tmp_path):
    with pytest.raises(ValueError) as e:
        load_dataset("imagenet", "train")
    for known in ("glyphs", "omniglot", "mini-imagenet", "folder"):
        assert known in str(e.value)
    with pytest.raises(ValueError, match="root"):
        load_dataset("omniglot", "train")
    with pytest.raises(ValueError, match="split"):
        load_dataset("omniglot", "meta-test", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="omniglot-py"):
        load_dataset("omniglot", "train", root=tmp_path)
