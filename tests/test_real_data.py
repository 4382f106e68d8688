"""Run only where real CIFAR-10 is available (CI prepares the offline copy and sets CIFAR10_ROOT)."""
import torch

import helpers as H
from conftest import real_root, requires_real_data


@requires_real_data
def test_real_cifar10_has_the_standard_shape_and_balance():
    data = H.load_cifar10(real_root(), download=False)
    assert data.train.images.shape == (50_000, 3, 32, 32) and data.test.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(data.train.labels).tolist() == [5000] * 10
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10


@requires_real_data
def test_one_short_training_on_a_real_subset_beats_chance(tmp_path, capsys):
    data = H.load_cifar10(real_root(), download=False)
    run = H.fit(H.TrainConfig(model="avgpool", epochs=1, train_subset=5000, test_subset=1000, precision="auto"),
                data, results_dir=tmp_path, progress=False)
    print(run.history.to_string())
    assert "epoch   1/1" in capsys.readouterr().out
    assert run.history["test_acc"].iloc[0] > 0.15
