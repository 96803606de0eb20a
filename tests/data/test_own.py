"""The user's own data: ``npz`` arrays and ``folder`` images, their seeded splits, and one line
naming the problem for every bad dataset; options a dataset does not read are errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustq_deploy.data import load_dataset
from robustq_deploy.errors import DataError


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture
def pixels():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (20, 1, 6, 5), dtype=np.uint8), rng.integers(0, 3, 20).astype(np.int64)


def test_npz_with_its_own_test_split(tmp_path, pixels):
    x, y = pixels
    p = _npz(tmp_path / "d.npz", x=x, y=y, x_test=x[:4], y_test=y[:4], classes=np.array(["a", "b", "c"]))
    tr, te = load_dataset("npz", "train", path=p), load_dataset("npz", "test", path=p)
    assert np.array_equal(tr.images, x) and np.array_equal(te.labels, y[:4])
    assert tr.classes == ("a", "b", "c") and tr.input_shape == (1, 6, 5) and tr.name == "npz"


def test_npz_float_channels_last_seeded_split(tmp_path, pixels):
    x, y = pixels
    xf = x.transpose(0, 2, 3, 1).astype(np.float32) / 255  # [N, H, W, C] floats in [0, 1]
    p = _npz(tmp_path / "d.npz", x=xf, y=y.astype(np.int32))
    tr = load_dataset("npz", "train", path=p, test_fraction=0.25, split_seed=3)
    te = load_dataset("npz", "test", path=p, test_fraction=0.25, split_seed=3)
    assert len(tr) == 15 and len(te) == 5 and tr.images.dtype == np.uint8
    # every image once, in one split or the other, pixels as they were
    both = np.concatenate([tr.images, te.images]).reshape(20, -1)
    assert sorted(map(bytes, both)) == sorted(map(bytes, x.reshape(20, -1)))
    assert np.array_equal(load_dataset("npz", "test", path=p, test_fraction=0.25, split_seed=3).images, te.images)
    other = load_dataset("npz", "test", path=p, test_fraction=0.25, split_seed=4)
    assert not np.array_equal(other.images, te.images)
    assert tr.classes == ("0", "1", "2")


def test_npz_grayscale_without_channel_axis(tmp_path, pixels):
    x, y = pixels
    p = _npz(tmp_path / "d.npz", x=x[:, 0], y=y)
    assert load_dataset("npz", "train", path=p).input_shape == (1, 6, 5)


@pytest.mark.parametrize("arrays,message", [
    (lambda x, y: {"x": x, "y": y[:-1]}, "x has 20 images but y has 19 labels"),
    (lambda x, y: {"x": x, "y": y, "classes": np.array(["a", "b"])}, "label 2 is out of range for 2 classes"),
    (lambda x, y: {"x": x, "y": y - 1}, "label -1; labels must be >= 0"),
    (lambda x, y: {"x": x.astype(np.float32), "y": y}, r"values in \[0, 255\]; float images must lie in \[0, 1\]"),
    (lambda x, y: {"x": x.astype(np.int16), "y": y}, "dtype int16; expected uint8 pixels or floats"),
    (lambda x, y: {"x": x, "y": y.astype(np.float32)}, "y must be a 1-D integer array"),
    (lambda x, y: {"x": x}, "no array 'y'"),
    (lambda x, y: {"x": x, "y": y, "x_test": x}, "x_test and y_test must be given together"),
    (lambda x, y: {"x": np.zeros((4, 5, 6, 7), np.uint8), "y": y[:4]}, "neither axis 1 nor axis 3 is a channel axis"),
    (lambda x, y: {"x": x, "y": y, "x_test": x[:, :, :4], "y_test": y}, "x_test images are"),
])
def test_bad_npz_is_one_line(tmp_path, pixels, arrays, message):
    p = _npz(tmp_path / "bad.npz", **arrays(*pixels))
    with pytest.raises(DataError, match=message) as exc:
        load_dataset("npz", "train", path=p)
    assert "\n" not in str(exc.value) and "bad.npz" in str(exc.value)


def test_npz_missing_or_corrupt_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset("npz", "train", path=str(tmp_path / "none.npz"))
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_dataset("npz", "train", path=str(tmp_path / "c.npz"))
    with pytest.raises(DataError, match="needs data.path"):
        load_dataset("npz", "train")


def _image(path: Path, size=(6, 5), mode="L", value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size[0], size[1]) if mode == "L" else (size[0], size[1], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def _folder(root: Path, per_class: int = 5, **kw) -> str:
    for c, name in enumerate(("cat", "dog")):
        for i in range(per_class):
            _image(root / name / f"{i}.png", value=10 * c + i, **kw)
    return str(root)


def test_folder_of_pngs(tmp_path):
    p = _folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "dog" / "notes.txt").write_text("not an image")  # other files are not images
    tr = load_dataset("folder", "train", path=p, test_fraction=0.2, split_seed=0)
    te = load_dataset("folder", "test", path=p, test_fraction=0.2, split_seed=0)
    assert tr.classes == ("cat", "dog") and len(tr) == 8 and len(te) == 2
    assert tr.input_shape == (1, 6, 5)
    first = np.asarray(Image.open(tmp_path / "imgs" / "cat" / "0.png"))
    all_images = np.concatenate([tr.images, te.images])
    assert any(np.array_equal(img[0], first) for img in all_images)


def test_folder_channels_size_and_jpeg(tmp_path):
    root = tmp_path / "imgs"
    _image(root / "a" / "x.png", size=(10, 8))
    _image(root / "a" / "y.jpg", size=(6, 6), mode="RGB")
    _image(root / "b" / "z.JPEG", size=(7, 9), mode="RGB")
    ds = load_dataset("folder", "train", path=str(root), size=[4, 4], test_fraction=0.34)
    assert ds.input_shape == (3, 4, 4)  # a colour image makes every image RGB
    ds = load_dataset("folder", "train", path=str(root), size=[4, 3], channels=1, test_fraction=0.34)
    assert ds.input_shape == (1, 4, 3)


def test_bad_folders_are_one_line(tmp_path):
    root = tmp_path / "mixed"
    _image(root / "a" / "1.png", size=(6, 5))
    _image(root / "b" / "2.png", size=(8, 8))
    with pytest.raises(DataError, match=r"mixed image sizes \(6x5 in .*1.png, 8x8 in .*2.png\); set data.size"):
        load_dataset("folder", "train", path=str(root))
    (root / "b" / "3.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"3.png: unreadable image"):
        load_dataset("folder", "train", path=str(root), size=[4, 4])
    (root / "c").mkdir()
    with pytest.raises(DataError, match=r"/c: empty class"):
        load_dataset("folder", "train", path=str(root), size=[4, 4])
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset("folder", "train", path=str(tmp_path / "flat"))
    with pytest.raises(DataError, match="no such folder"):
        load_dataset("folder", "train", path=str(tmp_path / "none"))


def test_options_a_dataset_does_not_read_are_errors(tmp_path, pixels):
    p = _npz(tmp_path / "d.npz", x=pixels[0], y=pixels[1])
    with pytest.raises(DataError, match=r"data.data_dir \(--data-dir\): not used by dataset 'npz' \(it reads data.path"):
        load_dataset("npz", "train", data_dir=str(tmp_path), path=p)
    with pytest.raises(DataError, match=r"data.size: not used by dataset 'npz'"):
        load_dataset("npz", "train", path=p, size=[4, 4])
    with pytest.raises(DataError, match=r"data.path \(--data\): not used by dataset 'mnist'"):
        load_dataset("mnist", "test", path=p)
    with pytest.raises(DataError, match=r"data.data_dir \(--data-dir\): not used by dataset 'digits' \(it reads no files\)"):
        load_dataset("digits", "test", data_dir=str(tmp_path))
