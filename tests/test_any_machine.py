"""The committed report opens on machines unlike the one that trained it: CPUs without bf16,
CUDA GPUs with and without native bf16, Apple's MPS. No GPU is needed: the device checks are
simulated, and the CPU stands in where the code branches on the device."""
import importlib.util
import json

import pandas as pd
import pytest
import torch

import helpers as H
from conftest import REPO

TINY = dict(epochs=2, train_subset=200, test_subset=100)
FINISHED = sorted(p.parent for p in (REPO / "results").rglob("metrics.json"))
STUDIES_WITHOUT_WEIGHTS = ("jpeg", "precision", "gap")       # studies that read numbers only; their weights are not kept
NUMBERS_ONLY = [f for f in FINISHED if f.relative_to(REPO / "results").parts[0] in STUDIES_WITHOUT_WEIGHTS]
COMMITTED = [f for f in FINISHED if f not in NUMBERS_ONLY]          # runs the notebooks load with their weights


def test_the_committed_runs_are_there():
    assert len(COMMITTED) >= 20, COMMITTED
    assert all((f / "model.pt").exists() for f in COMMITTED), [f for f in COMMITTED if not (f / "model.pt").exists()]
    for folder in NUMBERS_ONLY:
        run = H.load_run(folder, weights=False)
        assert len(run.history) == run.config.epochs


@pytest.fixture
def no_bf16(monkeypatch):
    """A laptop: no AVX-512 BF16 or AMX, no GPU."""
    monkeypatch.setattr(H.device, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("device, expected", [("cpu", "fp32"), ("mps", "fp32")])
def test_auto_precision_is_fp32_without_native_bf16(no_bf16, device, expected):
    assert H.device.resolve_precision("auto", torch.device(device)) == expected


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_on_cuda_asks_for_native_bf16(monkeypatch, capability, expected):
    # torch.cuda.is_bf16_supported() says True on a T4 (7.5), which only emulates bf16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert H.device.resolve_precision("auto", torch.device("cuda")) == expected


@pytest.mark.parametrize("device", ["cpu", "mps", "cuda"])
def test_every_committed_run_loads_without_bf16(no_bf16, monkeypatch, device, capsys):
    """As notebooks 03-09 ask for them: precision "auto", which is fp32 here, against runs trained in bf16."""
    monkeypatch.setattr(H.training, "_train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    data = None                                          # a finished run never touches the data
    for folder in COMMITTED:
        saved = H.TrainConfig.from_dict(json.loads((folder / "config.json").read_text()))
        config = H.TrainConfig.from_dict({**saved.identity(), "precision": "auto"})
        run = H.fit(config, data, run_name=str(folder.relative_to(REPO / "results")), results_dir=REPO / "results",
                    device=device)
        assert run.config.precision == saved.precision          # the run says how it was trained
        assert len(run.history) == run.config.epochs
    out = capsys.readouterr().out
    assert out.count("finished run loaded") == len(COMMITTED) and "delete" not in out.lower()
    assert "trained in bf16, this machine computes in fp32" in out


def test_a_run_resumed_in_another_precision_says_so_and_records_it(fake_data, tmp_path, monkeypatch, capsys):
    real = H.training._stop_if_diverged

    def stop_in_epoch_2(loss, what, epoch, config, path):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(loss, what, epoch, config, path)
    monkeypatch.setattr(H.training, "_stop_if_diverged", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        H.fit(H.TrainConfig(model="avgpool", precision="bf16", **TINY), fake_data, run_name="run",
              results_dir=tmp_path, progress=False)
    monkeypatch.setattr(H.training, "_stop_if_diverged", real)
    run = H.fit(H.TrainConfig(model="avgpool", precision="fp32", **TINY), fake_data, run_name="run",
                results_dir=tmp_path, progress=False)
    out = capsys.readouterr().out
    assert "Epochs 1-1 ran in bf16, the rest runs in fp32 on cpu: the result will be close to, not bit-identical" in out
    assert run.metrics["changes_on_resume"] == [{"after_epoch": 1, "precision": ["bf16", "fp32"], "device": "cpu"}]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "bf16"   # as it started


def test_a_fresh_start_in_another_precision_rewrites_the_config_it_trains_with(fake_data, tmp_path, monkeypatch):
    """An attempt killed before its first checkpoint leaves only config.json; a new start in another precision
    trains from scratch, and its config.json must say so (a stale fp32 one beside a bf16 run did, once)."""
    monkeypatch.setattr(H.training, "_stop_if_diverged", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        H.fit(H.TrainConfig(model="avgpool", precision="fp32", **TINY), fake_data, run_name="run",
              results_dir=tmp_path, progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    monkeypatch.undo()
    run = H.fit(H.TrainConfig(model="avgpool", precision="bf16", **TINY), fake_data, run_name="run",
                results_dir=tmp_path, progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["precision"] == run.metrics["config"]["precision"] == "bf16"
    assert "changes_on_resume" not in run.metrics                 # nothing was resumed


def test_reevaluation_uses_the_runs_precision_only_where_the_device_runs_it(no_bf16):
    assert H.device.runnable_precision("bf16", torch.device("cpu")) == "fp32"
    assert H.device.runnable_precision("fp32", torch.device("cpu")) == "fp32"


def test_test_predictions_are_measured_once_and_kept_with_the_run(fake_data, tmp_path, monkeypatch):
    run = H.fit(H.TrainConfig(model="avgpool", **TINY), fake_data, run_name="run", results_dir=tmp_path,
                progress=False, verbose=False)
    x = H.normalize(fake_data.test.images[:100])
    first = H.results.test_predictions(run, x, "cpu")
    assert (tmp_path / "run" / "test_predictions.json").exists()
    monkeypatch.setattr(H.results, "predict", lambda *a, **k: pytest.fail("measured again"))
    assert torch.equal(H.results.test_predictions(run, x, "cpu"), first)
    assert len(first) == 100


def _run_notebooks_module():
    spec = importlib.util.spec_from_file_location("run_notebooks", REPO / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parameters_equal_to_a_notebooks_defaults_are_not_injected():
    declared = _run_notebooks_module().declared_parameters(REPO / "notebooks" / "03_train_fc.ipynb")
    assert declared["results_dir"] == "results" and declared["epochs"] == 100 and declared["data_root"] is None


def test_tables_have_stable_ids_and_formats():
    df = pd.DataFrame({"accuracy (%)": [74.870002, float("nan")], "parameters": [2190122, 1132842]})
    html = H.tables.show(df).data
    assert html == H.tables.show(df.copy()).data              # the same bytes on every run
    assert "74.9" in html and "2,190,122" in html and ">-<" in html and "74.870002" not in html


def test_the_readme_tells_a_newcomer_how_to_open_the_report():
    readme = (REPO / "README.md").read_text()
    first_screen = readme[:readme.index("## Open the notebooks")]
    for part in ("CIFAR10_ROOT=", "make report", "make test", "rewrites the README", "Colab", "kernel"):
        assert part in readme, part
    assert "make report" in first_screen and "CIFAR10_ROOT=" in first_screen
