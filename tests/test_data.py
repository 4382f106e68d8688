import shutil
from pathlib import Path

import pytest
import torch

import helpers as H
from helpers import data as D
from conftest import write_fake_cifar


def test_loads_standard_layout(fake_data):
    assert fake_data.train.images.shape == (500, 3, 32, 32) and fake_data.train.images.dtype == torch.uint8
    assert fake_data.test.images.shape == (200, 3, 32, 32)
    assert fake_data.train.labels.dtype == torch.int64 and set(fake_data.train.labels.tolist()) == set(range(10))
    assert not fake_data.official


def test_unofficial_copy_is_announced_once(tmp_path, capsys):
    root = write_fake_cifar(tmp_path)
    H.load_cifar10(root, download=False)
    H.load_cifar10(root, download=False)
    assert capsys.readouterr().out.count("not the official CIFAR-10 archive") == 1


def test_source_names_a_folder_inside_the_project_relative_to_it(fake_data):
    inside = D.CIFAR10(fake_data.train, fake_data.test, H.files.REPO_ROOT / "data", official=True)
    assert inside.source == "data/cifar-10-batches-py, the official archive"
    outside = fake_data.source
    assert outside.startswith(str(fake_data.root)) and outside.endswith(", not the official archive: its checksums differ")
    assert H.files.shown_path(H.files.REPO_ROOT / "results" / "fc") == Path("results/fc")


def test_env_var_sets_the_root(fake_root, monkeypatch):
    monkeypatch.setenv("CIFAR10_ROOT", str(fake_root))
    assert D.data_root() == fake_root.resolve()


def test_normalisation_maps_pixels_to_minus_one_one():
    x = torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = H.normalize(x)
    assert out[0, 0].eq(-1).all() and out[0, 1].eq(1).all()
    assert out[0, 2, 0, 0].item() == pytest.approx(128 / 255 * 2 - 1, abs=1e-6)


def test_balanced_subset_and_hold_out(fake_data):
    sub = H.balanced_subset(fake_data.train, 100, seed=1)
    assert torch.bincount(sub.labels, minlength=10).tolist() == [10] * 10
    rest, held = H.hold_out(fake_data.train, 50)
    assert len(rest) == 450 and len(held) == 50
    assert torch.bincount(held.labels, minlength=10).tolist() == [5] * 10
    # disjoint: no held-out image appears in the rest (the fake images are all distinct)
    flat_rest = {bytes(img.flatten().tolist()) for img in rest.images}
    assert not any(bytes(img.flatten().tolist()) in flat_rest for img in held.images)
    with pytest.raises(ValueError, match="multiple of 10"):
        H.balanced_subset(fake_data.train, 55)


def test_batches_cover_everything_once_and_shuffle_reproducibly():
    x, y = torch.arange(130).float().view(-1, 1), torch.arange(130)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = [yb for _, yb in D.batches(x, y, 64, g1)]
    b = [yb for _, yb in D.batches(x, y, 64, g2)]
    assert [len(t) for t in a] == [64, 64, 2]                       # short last batch kept
    assert torch.cat(a).sort().values.tolist() == list(range(130))  # each image once
    assert all(torch.equal(p, q) for p, q in zip(a, b))             # same seed, same order
    assert not torch.equal(torch.cat(a), y)                         # actually shuffled


def test_missing_data_without_network_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")
    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(H.DataError) as err:
        H.load_cifar10(tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "CIFAR10_ROOT" in msg and "cifar-10-python.tar.gz" in msg
    assert "Network is unreachable" in msg


def test_download_false_refuses_cleanly(tmp_path):
    with pytest.raises(H.DataError, match="download=False"):
        H.load_cifar10(tmp_path, download=False)


def _copy(fake_root, tmp_path):
    shutil.copytree(fake_root, tmp_path / "copy")
    return tmp_path / "copy", tmp_path / "copy" / "cifar-10-batches-py"


def test_truncated_batch_names_the_file(fake_root, tmp_path):
    root, folder = _copy(fake_root, tmp_path)
    data = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(data[: len(data) // 2])
    with pytest.raises(H.DataError, match="data_batch_3 is truncated, corrupt"):
        H.load_cifar10(root, download=False, verbose=False)


def _rewrite(folder, name, **changes):
    import pickle
    batch = pickle.loads((folder / name).read_bytes())
    batch.update(changes)
    (folder / name).write_bytes(pickle.dumps(batch))


def test_wrong_shape_is_reported(fake_root, tmp_path):
    import numpy as np
    root, folder = _copy(fake_root, tmp_path)
    _rewrite(folder, "test_batch", data=np.zeros((200, 1024), dtype=np.uint8))
    with pytest.raises(H.DataError, match="test_batch: expected uint8 image rows of 3072"):
        H.load_cifar10(root, download=False, verbose=False)


def test_bad_labels_are_reported(fake_root, tmp_path):
    root, folder = _copy(fake_root, tmp_path)
    _rewrite(folder, "data_batch_1", labels=[12] * 100)
    with pytest.raises(H.DataError, match="labels must lie in 0..9"):
        H.load_cifar10(root, download=False, verbose=False)
    _rewrite(folder, "data_batch_1", labels=[1] * 99)
    with pytest.raises(H.DataError, match="100 images but 99 labels"):
        H.load_cifar10(root, download=False, verbose=False)


def test_flip_and_crop_keeps_shape_and_is_reproducible():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    a = D.flip_and_crop(x, torch.Generator().manual_seed(1), pad=2)
    b = D.flip_and_crop(x, torch.Generator().manual_seed(1), pad=2)
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.is_contiguous(memory_format=torch.channels_last)
    flat = torch.full((4, 3, 8, 8), 7.0)
    assert torch.equal(D.flip_and_crop(flat, torch.Generator().manual_seed(0)), flat)   # reflection keeps constants
    seen = {tuple(D.flip_and_crop(x, torch.Generator().manual_seed(s), pad=2)[0, 0, 0, :2].tolist())
            for s in range(20)}
    assert len(seen) > 3                                                                # crops actually vary


def test_flip_and_crop_moves_by_at_most_pad_pixels():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 4, 4] = 1.0                                   # one bright pixel in the middle
    for pad in (1, 2):
        out = H.data.flip_and_crop(x, torch.Generator().manual_seed(0), pad=pad)
        rows, cols = out[:, 0].amax(2).argmax(1), out[:, 0].amax(1).argmax(1)
        assert out.amax((1, 2, 3)).eq(1).all()
        assert ((rows - 4).abs() <= pad).all() and ((cols - 4).abs() <= pad + 1).all()   # +1: the mirror image
        assert (rows != 4).any()


def test_the_official_checksums_are_torchvisions():
    from torchvision.datasets import CIFAR10 as TV
    assert H.data.OFFICIAL_MD5 == dict(TV.train_list + TV.test_list)
