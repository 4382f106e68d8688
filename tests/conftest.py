"""Shared fixtures: a tiny, learnable CIFAR-10 written in the standard pickle layout."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import helpers as H

REPO = Path(__file__).resolve().parent.parent


def write_fake_cifar(root: Path, n_train: int = 500, n_test: int = 200, seed: int = 0) -> Path:
    """Each class is a distinct colour plus noise, so a model can learn it in a few steps."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    # ten well-separated colours (the corners and centre of the RGB cube, plus two mixes)
    palette = np.array([[30, 30, 30], [225, 30, 30], [30, 225, 30], [30, 30, 225], [225, 225, 30],
                        [225, 30, 225], [30, 225, 225], [225, 225, 225], [128, 128, 128], [128, 30, 225]])

    def make(n):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = palette[labels][:, :, None, None] + rng.normal(0, 20, (n, 3, 32, 32))
        return np.clip(images, 0, 255).astype(np.uint8).reshape(n, -1), labels.tolist()

    def dump(obj, name):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f)

    for i in range(1, 6):
        data, labels = make(n_train // 5)
        dump({"data": data, "labels": labels, "batch_label": f"fake {i}"}, f"data_batch_{i}")
    data, labels = make(n_test)
    dump({"data": data, "labels": labels, "batch_label": "fake test"}, "test_batch")
    dump({"label_names": list(H.CLASSES)}, "batches.meta")
    return root


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory) -> Path:
    return write_fake_cifar(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="session")
def fake_data(fake_root):
    return H.load_cifar10(fake_root, download=False, verbose=False)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(1)
    yield


def real_root():
    root = os.environ.get("CIFAR10_ROOT")
    if not root or not (Path(root) / "cifar-10-batches-py" / "test_batch").exists():
        return None
    return Path(root)


requires_real_data = pytest.mark.skipif(real_root() is None, reason="CIFAR10_ROOT with real CIFAR-10 not set")
