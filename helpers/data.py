"""CIFAR-10 in memory: find it, read it, check it, split it and batch it.

The data lives in the standard ``cifar-10-batches-py/`` layout (five training
pickles, one test pickle, ``batches.meta``) under a *data root*: ``data/`` at the
repository root unless ``CIFAR10_ROOT`` says otherwise. The pickles are read
directly into uint8 tensors, once; there is no per-image PIL pipeline.

If the folder is missing, the official archive is downloaded once through
torchvision. A copy whose checksums differ from the official archive (such as
the JPEG re-encoding used on the project's offline machines) is accepted, and
the loader says once that it is not the official archive.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .files import REPO_ROOT, project_path, shown_path

BATCH_DIR = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# The official files' checksums (as torchvision lists them; kept here so that reading the data does
# not import torchvision, which takes seconds).
OFFICIAL_MD5 = {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e"}

# The report normalises every channel with mean 0.5 and std 0.5 (to [-1, 1]).
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

_warned_unofficial: set[str] = set()


class DataError(RuntimeError):
    """CIFAR-10 could not be found, downloaded or read; the message says what to do."""


@dataclass
class ImageSet:
    """One set of images held in memory (training, test or validation): uint8 images (N, 3, 32, 32) and
    int64 labels (N,)."""
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])


@dataclass
class CIFAR10:
    train: ImageSet
    test: ImageSet
    root: Path
    official: bool      # True when every batch file matches the official archive's MD5
    classes: tuple = CLASSES
    changed: str = ""   # what was done to the images after reading them, e.g. "re-encoded as JPEG at quality 50"

    @property
    def source(self) -> str:
        """Where the images came from (a folder as ``shown_path`` writes it), whether they are official and
        what was done to them since."""
        kind = "the official archive" if self.official else "not the official archive: its checksums differ"
        return f"{shown_path(self.root / BATCH_DIR)}, {kind}" + (f"; {self.changed}" if self.changed else "")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds ``cifar-10-batches-py/``: argument, then $CIFAR10_ROOT, then ``data/``."""
    if root is None:
        env = os.environ.get("CIFAR10_ROOT")
        if env:
            path = project_path(env).resolve()
            if not path.is_dir():
                raise DataError(f"CIFAR10_ROOT={env} is not an existing folder. Point it at the folder that holds "
                                f"{BATCH_DIR}/, or unset it to use data/ in the project (downloaded if missing).")
            return path
        root = REPO_ROOT / "data"
    return project_path(root).resolve()


def load_cifar10(root=None, download: bool = True, verbose: bool = True) -> CIFAR10:
    """Read all 60,000 images into memory, downloading the official archive if absent."""
    root = data_root(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"the data root {shown_path(root)} is a file, not a folder. Give a folder that holds "
                        f"{BATCH_DIR}/ (or will, after the download).")
    folder = root / BATCH_DIR
    present = [name for name in TRAIN_FILES + TEST_FILES if (folder / name).exists()]
    if present and len(present) < len(TRAIN_FILES + TEST_FILES):
        missing = [name for name in TRAIN_FILES + TEST_FILES if name not in present]
        raise DataError(f"{shown_path(folder)} is incomplete: {', '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} missing. Copy the missing file(s) from the archive "
                        f"({ARCHIVE_URL}), or point CIFAR10_ROOT at a complete copy.")
    if not present:
        if not download:
            raise DataError(_missing_message(root, "download=False was given"))
        _download(root)
    train = _read_split(folder, TRAIN_FILES)
    test = _read_split(folder, TEST_FILES)
    official = _is_official(folder)
    _check_overlap(folder, train, test)
    sizes = {"training": (len(train), 50_000), "test": (len(test), 10_000)}
    odd = [f"{n:,} {split} images (CIFAR-10 has {full:,})" for split, (n, full) in sizes.items() if n != full]
    if odd:                 # always said: a smaller set changes every number
        print(f"Note: {shown_path(folder)} holds {' and '.join(odd)}: not the whole data set. Runs trained on it, "
              "and measurements of finished runs, are not comparable with the report's.")
    if not official and verbose and str(folder) not in _warned_unofficial:
        _warned_unofficial.add(str(folder))
        print(f"Note: {shown_path(folder)} is not the official CIFAR-10 archive (its MD5 sums differ). "
              "Results from it are not directly comparable with published CIFAR-10 numbers.")
    return CIFAR10(train, test, root, official)


def _missing_message(root: Path, why: str) -> str:
    return (f"CIFAR-10 was not found in {shown_path(root / BATCH_DIR)} and could not be downloaded ({why}).\n"
            f"Either set CIFAR10_ROOT to a folder that contains {BATCH_DIR}/, or download "
            f"{ARCHIVE_URL} by hand and unpack it into {root} (tar xzf cifar-10-python.tar.gz -C {root}).")


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10 as TV
    from torchvision.datasets.utils import download_and_extract_archive
    try:
        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(TV.url, str(root), filename=TV.filename, md5=TV.tgz_md5)
    except Exception as exc:  # network and file-system errors come in many types; all mean the same to the user
        raise DataError(_missing_message(root, f"{type(exc).__name__}: {exc}")) from None


class _BatchUnpickler(pickle.Unpickler):
    """Reads a CIFAR-10 batch and nothing else: a pickle may name any function to call while it loads,
    so only the numpy array pieces that the format uses are let through."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks to load {module}.{name}, which is not part of the CIFAR-10 "
                                         "format (refused: loading it could run code)")
        import numpy
        if module == "numpy":
            return getattr(numpy, name)
        core = getattr(numpy, "_core", None) or numpy.core
        return getattr(core.numeric if module.endswith("numeric") else core.multiarray, name)


def _read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np
    again = f"Replace it with the file from the official archive ({ARCHIVE_URL}), or point CIFAR10_ROOT at a good copy."
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="latin1").load()
    except IsADirectoryError:
        raise DataError(f"{shown_path(path)} is a folder, not a CIFAR-10 batch file. {again}") from None
    except PermissionError:
        raise DataError(f"{shown_path(path)} cannot be read: permission denied. Make it readable "
                        f"(chmod u+r {path}), or point CIFAR10_ROOT at a copy you can read.") from None
    except OSError as exc:
        raise DataError(f"{shown_path(path)} cannot be read ({exc.strerror or exc}). {again}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError) as exc:
        raise DataError(f"{shown_path(path)} is truncated, corrupt or not a CIFAR-10 batch "
                        f"({type(exc).__name__}: {exc}). {again}") from None
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise DataError(f"{shown_path(path)} is not a CIFAR-10 batch: expected a dict with 'data' and 'labels'. {again}")
    raw, raw_labels = batch["data"], batch["labels"]
    if not isinstance(raw, np.ndarray):
        raise DataError(f"{shown_path(path)}: 'data' must be a numpy array of images, got {type(raw).__name__}. {again}")
    if raw.ndim == 4 and raw.shape[1:] == (32, 32, 3):
        raise DataError(f"{shown_path(path)}: the images are stored channel-last, {raw.shape}; CIFAR-10 stores each "
                        "image as one row of 3072 values, the red, green and blue planes one after the other "
                        "(reshape with images.transpose(0, 3, 1, 2).reshape(len(images), -1)).")
    if raw.dtype != np.uint8 or raw.ndim != 2 or raw.shape[1] != 3 * 32 * 32:
        raise DataError(f"{shown_path(path)}: expected uint8 image rows of 3072 values (3x32x32), "
                        f"got {raw.dtype} with shape {raw.shape}. {again}")
    labels_array = np.asarray(raw_labels)
    if labels_array.size == 0:
        labels_array = labels_array.astype(np.int64)     # an empty list has no type; the count check names it
    if labels_array.ndim != 1 or not np.issubdtype(labels_array.dtype, np.integer):
        kind = labels_array.dtype if labels_array.ndim == 1 else f"shape {labels_array.shape}"
        raise DataError(f"{shown_path(path)}: labels must be a list of integers 0-9, got {kind} "
                        f"(first: {labels_array.ravel()[:3].tolist()}). {again}")
    data = torch.from_numpy(raw.copy())
    labels = torch.from_numpy(labels_array.astype(np.int64))
    if labels.shape != (data.shape[0],):
        raise DataError(f"{shown_path(path)}: {data.shape[0]} images but {labels.numel()} labels. {again}")
    if labels.numel() and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{shown_path(path)}: labels must lie in 0..9, found {labels.min()}..{labels.max()}. {again}")
    return data.view(-1, 3, 32, 32), labels


def _read_split(folder: Path, names: list[str]) -> ImageSet:
    parts = [_read_batch(folder / name) for name in names]
    split = ImageSet(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    where = shown_path(folder / names[0]) if len(names) == 1 else f"{shown_path(folder)}/{names[0][:-2]}_*"
    if not len(split):
        raise DataError(f"{where} holds no images. Replace it with the file from the official archive ({ARCHIVE_URL}).")
    counts = split.labels.bincount(minlength=10)
    if (counts == 0).any():
        absent = [CLASSES[c] for c in (counts == 0).nonzero().flatten().tolist()]
        raise DataError(f"{where} has no image of class {', '.join(absent)} ({len(split):,} images in all): "
                        f"the files are incomplete or not CIFAR-10. Replace them from the official archive ({ARCHIVE_URL}).")
    return split


def _check_overlap(folder: Path, train: ImageSet, test: ImageSet, tolerated: int = 10) -> None:
    """Refuse test images that are also training images (beyond ``tolerated``): a test batch copied over a
    training batch would otherwise score a model on what it memorised. Candidates are found by hashing 256
    fixed pixels of each image, then compared whole."""
    if not len(train) or not len(test):
        return
    g = torch.Generator().manual_seed(0)
    picks = torch.randperm(3 * 32 * 32, generator=g)[:256]
    weights = torch.randint(1, 2 ** 31, (256,), generator=g, dtype=torch.int64)
    def hashes(split):
        return (split.images.reshape(len(split), -1)[:, picks].long() * weights).sum(1)
    train_h, test_h = hashes(train), hashes(test)
    candidates = torch.isin(test_h, train_h).nonzero().flatten()
    if not len(candidates):
        return
    by_hash = {}
    for i, h in enumerate(train_h.tolist()):
        by_hash.setdefault(h, []).append(i)
    flat_train = train.images.reshape(len(train), -1)
    same = [int(t) for t in candidates.tolist()
            if any(torch.equal(test.images[t].reshape(-1), flat_train[i]) for i in by_hash[test_h[t].item()])]
    if len(same) > tolerated:
        raise DataError(f"{len(same):,} of the {len(test):,} test images in {shown_path(folder)}/test_batch are also "
                        "training images (data_batch_*): a batch was copied over another. Restore the files from "
                        f"the official archive ({ARCHIVE_URL}).")
    if same:
        print(f"Note: {len(same)} test image(s) in {shown_path(folder)} also appear among the training images "
              f"(test indices {', '.join(map(str, same[:5]))}).")


def _is_official(folder: Path) -> bool:
    return all(hashlib.md5((folder / name).read_bytes()).hexdigest() == md5 for name, md5 in OFFICIAL_MD5.items())


# ---------------------------------------------------------------- subsets and held-out sets

def _balanced_indices(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    if size % 10:
        raise ValueError(f"subset size must be a multiple of 10 (one tenth per class), got {size}")
    per_class = size // 10
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(10):
        idx = (labels == c).nonzero().flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} images, {per_class} were asked for")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


def balanced_subset(split: ImageSet, size: int, seed: int = 0) -> ImageSet:
    """A class-balanced random subset of ``size`` images (size/10 per class)."""
    return split.subset(_balanced_indices(split.labels, size, seed))


def hold_out(split: ImageSet, size: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Split off a class-balanced validation set of ``size`` images: returns (rest, held_out)."""
    held = _balanced_indices(split.labels, size, seed)
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[held] = False
    return split.subset(keep.nonzero().flatten()), split.subset(held)


def examples_per_class(split: ImageSet, per_class: int, seed: int = 0) -> ImageSet:
    """``per_class`` random images of each class, ordered class by class."""
    g = torch.Generator().manual_seed(seed)
    picks = [(split.labels == c).nonzero().flatten() for c in range(10)]
    return split.subset(torch.cat([idx[torch.randperm(len(idx), generator=g)[:per_class]] for idx in picks]))


def channel_stats(split: ImageSet) -> pd.DataFrame:
    """Per-channel mean and std of the pixels, on the [0, 1] scale and after the report's normalisation."""
    x = split.images.float().div_(255)
    mean, std = x.mean((0, 2, 3)), x.std((0, 2, 3))
    z = normalize(split.images)
    return pd.DataFrame({"mean [0,1]": mean.numpy(), "std [0,1]": std.numpy(),
                         "normalised mean": z.mean((0, 2, 3)).numpy(), "normalised std": z.std((0, 2, 3)).numpy()},
                        index=["red", "green", "blue"])


# ---------------------------------------------------------------- tensors and batches

def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N,3,32,32) -> float32 scaled to [0,1] then standardised with MEAN/STD."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return (images.float().div_(255) - mean) / std


def to_device(split: ImageSet, device, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images and labels on ``device``, ready for index batching."""
    x = normalize(split.images.to(device))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, split.labels.to(device)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None):
    """Yield (images, labels) batches; shuffled by ``generator`` when one is given. Keeps the short last batch."""
    n = len(y)
    order = torch.randperm(n, generator=generator).to(y.device) if generator is not None else None
    for start in range(0, n, batch_size):
        if order is None:
            yield x[start:start + batch_size], y[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]


def flip_and_crop(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip (p = 0.5) and random crop after ``pad`` pixels of reflection padding,
    per image, on whatever device the batch lives; the random numbers come from ``generator`` (CPU)."""
    n, _, h, w = x.shape
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(-1, 1, 1, 1)
    padded = torch.nn.functional.pad(torch.where(flip, x.flip(3), x), (pad, pad, pad, pad), mode="reflect")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out
