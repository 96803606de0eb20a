"""The user's own images: ``dataset = "npz"`` (arrays in one file) and ``dataset = "folder"``
(one subfolder of PNG / JPEG files per class).

``npz`` (``path = "file.npz"``, read with ``allow_pickle=False``): ``x`` uint8 pixels or floats in
[0, 1], shape ``[N, C, H, W]``, ``[N, H, W, C]`` (C of 1, 3 or 4 last, when the second axis is not
such a C) or ``[N, H, W]`` (one channel); ``y`` integer labels ``[N]``; optionally ``x_test`` /
``y_test`` (the test split) and ``classes`` (class names; default ``"0"``, ``"1"``, ...).

``folder`` (``path = "dir"``): every subfolder is a class (sorted by name), every ``.png`` /
``.jpg`` / ``.jpeg`` file in it an image, read with Pillow. ``channels`` 1 (grayscale) or 3 (RGB)
converts every image (default: 1 when all images are grayscale, else 3); ``size = [H, W]``
resizes them (bilinear); without it all images must have one size.

Without a test split of their own, both hold out a seeded share of the images
(``test_fraction``, ``split_seed``): the same config always gives the same split, for training
and for verification. Every problem with the data is one :class:`~robustq_deploy.errors.DataError`
naming the file and what is wrong with it.
"""
from __future__ import annotations

import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from robustq_deploy.data.dataset import Dataset
from robustq_deploy.data.registry import register_dataset
from robustq_deploy.data.storage import one_line
from robustq_deploy.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CHANNELS = (1, 3, 4)


def _split(images: np.ndarray, labels: np.ndarray, split: str, fraction: float, seed: int, where: str):
    """The seeded train / test split of a set without a test split of its own."""
    n = len(labels)
    if not 0 < fraction < 1:
        raise DataError(f"{where}: data.test_fraction must be in (0, 1), got {fraction!r}")
    n_test = min(max(1, round(n * fraction)), n - 1)
    if n < 2:
        raise DataError(f"{where}: {n} example(s); a train / test split needs at least 2")
    order = np.random.default_rng(seed).permutation(n)
    index = np.sort(order[:n_test] if split == "test" else order[n_test:])
    return images[index], labels[index]


# ----------------------------------------------------------------------------- npz


def _to_nchw(x: np.ndarray, name: str, where: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise DataError(f"{where}: {name} has shape {list(x.shape)}; expected [N, C, H, W], [N, H, W, C] or [N, H, W]")
    if x.shape[1] in _CHANNELS:
        return x
    if x.shape[3] in _CHANNELS:
        return x.transpose(0, 3, 1, 2)
    raise DataError(f"{where}: {name} has shape {list(x.shape)}; neither axis 1 nor axis 3 is a channel axis "
                    "(1, 3 or 4 channels)")


def _pixels(x: np.ndarray, name: str, where: str) -> np.ndarray:
    """uint8 pixels of ``x`` (uint8 as is; floats in [0, 1] scaled by 255 and rounded)."""
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind != "f":
        raise DataError(f"{where}: {name} has dtype {x.dtype}; expected uint8 pixels or floats in [0, 1]")
    if x.size and not np.all(np.isfinite(x)):
        raise DataError(f"{where}: {name} holds NaN or infinite values")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise DataError(f"{where}: {name} has values in [{x.min():g}, {x.max():g}]; float images must lie in [0, 1]")
    return np.rint(x.astype(np.float64) * 255).astype(np.uint8)


def _labels(y: np.ndarray, n: int, name: str, x_name: str, where: str) -> np.ndarray:
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise DataError(f"{where}: {name} must be a 1-D integer array, got {y.dtype} with shape {list(y.shape)}")
    if len(y) != n:
        raise DataError(f"{where}: {x_name} has {n} images but {name} has {len(y)} labels")
    if y.size and y.min() < 0:
        raise DataError(f"{where}: {name} has label {int(y.min())}; labels must be >= 0")
    return y.astype(np.int64)


@lru_cache(maxsize=4)
def _read_npz(path: Path, stamp: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None,
                                                            tuple[str, ...]]:
    where = str(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(one_line(f"{where}: not a readable .npz file ({exc})")) from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{where}: no array {key!r} (found: {', '.join(sorted(arrays)) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{where}: x_test and y_test must be given together")
    x = _pixels(_to_nchw(arrays["x"], "x", where), "x", where)
    y = _labels(arrays["y"], len(x), "y", "x", where)
    xt = yt = None
    if "x_test" in arrays:
        xt = _pixels(_to_nchw(arrays["x_test"], "x_test", where), "x_test", where)
        yt = _labels(arrays["y_test"], len(xt), "y_test", "x_test", where)
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"{where}: x_test images are {list(xt.shape[1:])}, x images {list(x.shape[1:])}")
    top = max([int(v.max()) for v in (y, yt) if v is not None and v.size] or [0])
    if "classes" in arrays:
        names = arrays["classes"]
        if names.ndim != 1 or names.dtype.kind not in "UiuS":
            raise DataError(f"{where}: classes must be a 1-D array of names")
        classes = tuple(str(c) for c in names.tolist())
        if top >= len(classes):
            raise DataError(f"{where}: label {top} is out of range for {len(classes)} classes")
    else:
        classes = tuple(str(i) for i in range(top + 1))
    if len(x) == 0:
        raise DataError(f"{where}: x holds no images")
    return x, y, xt, yt, classes


@register_dataset("npz", uses=("path", "test_fraction", "split_seed"))
def load_npz(split: str, data_dir: Path | None, download: bool, path: str | None = None, test_fraction: float = 0.2,
             split_seed: int = 0) -> Dataset:
    """Load a split of the arrays in ``path`` (see the module docstring)."""
    if path is None:
        raise DataError("dataset 'npz' needs data.path (the .npz file; --data on the command line)")
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: no such file (data.path of dataset 'npz')")
    st = p.stat()
    x, y, xt, yt, classes = _read_npz(p.resolve(), (st.st_size, st.st_mtime_ns))
    if xt is not None:
        images, labels = (x, y) if split == "train" else (xt, yt)
    else:
        images, labels = _split(x, y, split, test_fraction, split_seed, str(p))
    return Dataset("npz", split, images, labels, classes)


# ----------------------------------------------------------------------------- folder


def _class_files(root: Path) -> list[tuple[str, list[Path]]]:
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (data.path of dataset 'folder')")
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class subfolders (one subfolder of images per class)")
    out = []
    for d in classes:
        files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{d}: empty class (no {', '.join(IMAGE_SUFFIXES)} files)")
        out.append((d.name, files))
    return out


def _read_image(path: Path, mode: str | None, size: tuple[int, int] | None):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if mode is None:  # as the image is: grayscale stays one channel, anything else RGB
                mode = "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(im, np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(one_line(f"{path}: unreadable image ({exc})")) from None


@lru_cache(maxsize=2)
def _read_folder(root: Path, size: tuple[int, int] | None, channels: int | None,
                 stamp: tuple) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    listing = _class_files(root)
    if channels not in (None, 1, 3):
        raise DataError(f"data.channels: 1 (grayscale) or 3 (RGB), got {channels!r}")
    mode = {1: "L", 3: "RGB"}.get(channels) if channels else None
    images, labels, first = [], [], None
    for label, (_, files) in enumerate(listing):
        for f in files:
            a = _read_image(f, mode, size)
            if size is None:
                hw = a.shape[:2]
                if first is None:
                    first = (hw, f)
                elif hw != first[0]:
                    raise DataError(f"{root}: mixed image sizes ({first[0][0]}x{first[0][1]} in {first[1]}, "
                                    f"{hw[0]}x{hw[1]} in {f}); set data.size = [H, W] to resize them")
            images.append(a)
            labels.append(label)
    if channels is None and any(a.ndim == 3 for a in images):  # some colour images: all RGB
        images = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in images]
    x = np.stack([a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in images])
    return x, np.asarray(labels, np.int64), tuple(name for name, _ in listing)


def _folder_stamp(root: Path) -> tuple:
    """Names, sizes and modification times of every file under ``root``: the cache key."""
    if not root.is_dir():
        return ()
    return tuple((str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns)
                 for f in sorted(root.rglob("*")) if f.is_file())


@register_dataset("folder", uses=("path", "size", "channels", "test_fraction", "split_seed"))
def load_folder(split: str, data_dir: Path | None, download: bool, path: str | None = None,
                size=None, channels: int | None = None, test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """Load a split of the class folders under ``path`` (see the module docstring)."""
    if path is None:
        raise DataError("dataset 'folder' needs data.path (the folder of class subfolders; --data on the command line)")
    if size is not None and (len(size) != 2 or any(not isinstance(v, int) or v < 1 for v in size)):
        raise DataError(f"data.size: expected [H, W] with positive integers, got {list(size)!r}")
    root = Path(path).expanduser().resolve()
    x, y, classes = _read_folder(root, tuple(size) if size is not None else None, channels, _folder_stamp(root))
    images, labels = _split(x, y, split, test_fraction, split_seed, str(root))
    return Dataset("folder", split, images, labels, classes)


__all__ = ["IMAGE_SUFFIXES", "load_folder", "load_npz"]
