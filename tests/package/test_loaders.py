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


# -- gray or RGB, whatever the files hold -----------------------------------
def pil_gray(r, g, b):
    """PIL's L of an RGB pixel: ITU-R 601-2 luma, L = (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
    return (19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16


GRAY = {"dark": 30, "light": 200}                                       # class -> gray value
COLOUR = {"red": (220, 20, 40), "teal": (10, 150, 140)}                 # class -> RGB


def image_folder(root, mode, colours, n=3, size=(13, 9)):
    """One subfolder per class of `colours` ({name: PIL colour}), n plain PNGs each in PIL `mode`."""
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for k in range(n):
            Image.new(mode, size, colour).save(root / name / f"{k}.png")
    return root


def gray_folder(root, n=3, size=(13, 9)):
    return image_folder(root, "L", GRAY, n, size)


def rgb_folder(root, n=3, size=(9, 13)):
    return image_folder(root, "RGB", COLOUR, n, size)


def test_gray_folder_as_gray_and_as_rgb(tmp_path):
    root = gray_folder(tmp_path / "gray")
    one = load_image_folder(root, image_size=8, channels=1)
    three = load_image_folder(root, image_size=8, channels=3)
    assert one.images.shape == (6, 1, 8, 8) and three.images.shape == (6, 3, 8, 8)
    values = torch.tensor([GRAY["dark"]] * 3 + [GRAY["light"]] * 3, dtype=torch.uint8)
    assert torch.equal(one.images, values.view(6, 1, 1, 1).expand(6, 1, 8, 8))
    assert torch.equal(three.images, values.view(6, 1, 1, 1).expand(6, 3, 8, 8))   # gray in all three
    assert one.classes == three.classes == ["dark", "light"]
    assert one.targets.tolist() == three.targets.tolist() == [0, 0, 0, 1, 1, 1]


def test_rgb_folder_as_rgb_and_as_gray(tmp_path):
    root = rgb_folder(tmp_path / "rgb")
    three = load_image_folder(root, image_size=5, channels=3)
    one = load_image_folder(root, image_size=5, channels=1)
    assert three.images.shape == (6, 3, 5, 5) and one.images.shape == (6, 1, 5, 5)
    for i, rgb in enumerate(COLOUR.values()):       # classes sorted: red, teal
        block = three.images[3 * i:3 * i + 3]
        assert torch.equal(block, torch.tensor(rgb, dtype=torch.uint8).view(1, 3, 1, 1).expand(3, 3, 5, 5))
        assert (one.images[3 * i:3 * i + 3] == pil_gray(*rgb)).all()


def test_every_file_mode_becomes_the_channels_asked_for(tmp_path):
    """RGBA and LA (laid over white), palette with and without a transparent colour, 1-bit,
    16-bit gray (scaled, not clipped), a GIF: one class each, 2 files, as gray and as RGB."""
    import numpy as np
    root = tmp_path / "modes"
    expected = {}                                               # class -> the RGB it must give

    def save(name, img, rgb, suffix=".png"):
        (root / name).mkdir(parents=True)
        for k in range(2):
            img.save(root / name / f"{k}{suffix}")
        expected[name] = rgb

    save("a-rgba-opaque", Image.new("RGBA", (6, 6), (220, 20, 40, 255)), (220, 20, 40))
    save("b-rgba-clear", Image.new("RGBA", (6, 6), (0, 0, 0, 0)), (255, 255, 255))          # over white
    save("c-la-half", Image.new("LA", (6, 6), (0, 128)), (127, 127, 127))   # black, half opaque, over white
    pal = Image.new("P", (6, 6), 1)
    pal.putpalette([0, 0, 0, 10, 150, 140] + [0] * 762)
    save("d-palette", pal, (10, 150, 140))
    clear = pal.copy()
    clear.info["transparency"] = 1                                          # colour 1 is transparent
    save("e-palette-clear", clear, (255, 255, 255))
    save("f-bilevel", Image.new("1", (6, 6), 1), (255, 255, 255))
    v = round(40000 / 257)                                                  # PIL's convert would clip to 255
    save("g-gray16", Image.fromarray(np.full((6, 6), 40000, dtype=np.uint16)), (v, v, v))
    save("h-gif", pal.copy(), (10, 150, 140), suffix=".gif")
    gray = load_image_folder(root, image_size=4, channels=1)
    rgb = load_image_folder(root, image_size=4, channels=3)
    assert gray.classes == rgb.classes == sorted(expected)
    assert gray.image_shape == (1, 4, 4) and rgb.image_shape == (3, 4, 4)
    for c, name in enumerate(gray.classes):
        want = torch.tensor(expected[name], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4)
        assert torch.equal(rgb.images[rgb.indices_of(c)], want), name
        assert (gray.images[gray.indices_of(c)] == pil_gray(*expected[name])).all(), name


def test_the_fingerprint_tells_the_channels_apart(tmp_path):
    root = gray_folder(tmp_path / "gray")
    one, three = (load_image_folder(root, 8, channels=c) for c in (1, 3))
    assert one.fingerprint() != three.fingerprint()
    assert one.fingerprint() == load_image_folder(root, 8, channels=1, name="other name").fingerprint()
    assert load_image_folder(root, 8, channels=1).fingerprint() != \
        load_image_folder(root, 16, channels=1).fingerprint()


def test_load_dataset_folder_takes_the_channels(tmp_path):
    gray_folder(tmp_path / "f" / "train")
    assert load_dataset("folder", "train", root=tmp_path / "f", image_size=8).image_shape == (3, 8, 8)
    assert load_dataset("folder", "train", root=tmp_path / "f", image_size=8, channels=1).image_shape == (1, 8, 8)
    with pytest.raises(ValueError, match="channels must be 1"):
        load_dataset("folder", "train", root=tmp_path / "f", channels=4)


@pytest.mark.slow
def test_meta_training_on_a_gray_folder(tmp_path):
    """The configuration's in_channels=1 loads a folder of gray PNGs as gray: a few episodes of
    meta-training on it run end to end (they were refused as 3x28x28 before)."""
    from metalstm.config import get_config
    from metalstm.train import train
    g = torch.Generator().manual_seed(0)
    for split, n_classes in (("train", 6), ("val", 5), ("test", 5)):
        for c in range(n_classes):
            d = tmp_path / "data" / split / f"{split}{c}"
            d.mkdir(parents=True)
            base = torch.randint(0, 256, (20, 20), generator=g)
            for k in range(6):
                noise = torch.randint(-30, 31, (20, 20), generator=g)
                pixels = (base + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels, "L").save(d / f"{k}.png")
    cfg = get_config("smoke", dataset="folder", data_root=str(tmp_path / "data"), image_size=16,
                     in_channels=1, episodes=4, val_every=2, val_episodes=2)
    res = train(cfg, tmp_path / "run", progress=False)
    assert res.episodes_done == 4 and 0.0 <= res.best_val_acc <= 1.0
    assert (tmp_path / "run" / "best.pt").exists()


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
