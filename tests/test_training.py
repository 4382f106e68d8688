import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import helpers as H

METRICS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
TINY = dict(epochs=2, train_subset=200, test_subset=100)


def _fit(data, tmp_path, name="run", **kw):
    return H.fit(H.TrainConfig(**{**TINY, **kw}), data, run_name=name, results_dir=tmp_path, progress=False,
                 verbose=False)


def test_a_run_writes_its_results_and_learns(fake_data, tmp_path):
    run = _fit(fake_data, tmp_path, model="fc", epochs=3, train_subset=None)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert files == {"config.json", "history.csv", "metrics.json", "model.pt"}   # checkpoint dropped at the end
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(hist.columns) == METRICS + ["seconds", "images_per_s"] and len(hist) == 3
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["finished"] and metrics["parameters"] == 2_190_122 and metrics["config"]["precision"] == "fp32"
    assert metrics["best_test_acc"] == hist["test_acc"].max() > 0.5   # colours are easy to learn
    loaded = H.load_run(tmp_path / "run")
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), run.model.state_dict().values()))


def test_same_seed_same_history_other_seed_other_history(fake_data, tmp_path):
    a = _fit(fake_data, tmp_path, "a", model="avgpool_dropout", seed=1).history[METRICS]
    b = _fit(fake_data, tmp_path, "b", model="avgpool_dropout", seed=1).history[METRICS]
    c = _fit(fake_data, tmp_path, "c", model="avgpool_dropout", seed=2).history[METRICS]
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_finished_run_is_loaded_not_retrained(fake_data, tmp_path, capsys):
    first = _fit(fake_data, tmp_path, model="avgpool")
    again = H.fit(H.TrainConfig(model="avgpool", **TINY), fake_data, run_name="run", results_dir=tmp_path,
                  progress=False)
    assert "finished run loaded" in capsys.readouterr().out
    pd.testing.assert_frame_equal(first.history, again.history)


def test_a_different_config_never_overwrites_a_run(fake_data, tmp_path):
    _fit(fake_data, tmp_path, model="avgpool")
    before = (tmp_path / "run" / "history.csv").read_bytes()
    with pytest.raises(H.RunConflictError, match=r"epochs: 2 there, 3 now.*another run name"):
        _fit(fake_data, tmp_path, model="avgpool", epochs=3)
    assert (tmp_path / "run" / "history.csv").read_bytes() == before


def test_a_run_names_the_code_that_started_it_and_a_resume_under_other_code(fake_data, tmp_path, monkeypatch):
    from helpers import training
    real_save, calls = torch.save, [0]

    def save_then_crash(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:              # after epoch 1's checkpoint, die while writing epoch 2's
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(training, "git_state", lambda: {"commit": "a" * 40, "dirty": True})
    monkeypatch.setattr(torch, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        _fit(fake_data, tmp_path, model="avgpool", epochs=3)
    monkeypatch.setattr(torch, "save", real_save)
    monkeypatch.setattr(training, "git_state", lambda: {"commit": "b" * 40, "dirty": False})
    metrics = _fit(fake_data, tmp_path, model="avgpool", epochs=3).metrics
    assert metrics["code"] == {"commit": "a" * 40, "dirty": True}          # the start, not the finish
    assert metrics["changes_on_resume"] == [{"after_epoch": 1, "code": {"commit": "b" * 40, "dirty": False}}]


def test_validation_split_replaces_the_test_set(fake_data, tmp_path):
    run = _fit(fake_data, tmp_path, model="avgpool", validation=100, test_subset=None)
    assert {"val_loss", "val_acc"} <= set(run.history.columns) and "test_acc" not in run.history.columns
    assert run.metrics["val_images"] == 100 and run.metrics["train_images"] == 200


def test_interrupted_save_leaves_the_previous_checkpoint_loadable(fake_data, tmp_path, monkeypatch):
    real_save, calls = torch.save, [0]

    def save_then_crash(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:              # the second epoch's checkpoint: write half of it, then die
            f.write(b"partial")
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        _fit(fake_data, tmp_path, model="avgpool", epochs=3)
    monkeypatch.setattr(torch, "save", real_save)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)   # loads without running code
    assert len(ckpt["history"]) == 1
    resumed = _fit(fake_data, tmp_path, model="avgpool", epochs=3)
    assert resumed.history["epoch"].tolist() == [1, 2, 3]


CHILD = [sys.executable, str(Path(__file__).parent / "train_child.py")]
RUN_FILES = ["config.json", "history.csv", "metrics.json", "model.pt"]


def _child(root, results, kill, options="protocol"):
    return subprocess.run(CHILD + [str(root), str(results), kill, options], capture_output=True, text=True)


@pytest.fixture(scope="module")
def straight_runs(fake_root, tmp_path_factory):
    """Uninterrupted runs of each option set, trained once for all the kill tests."""
    made = {}

    def get(options):
        if options not in made:
            out = tmp_path_factory.mktemp(f"straight-{options}")
            done = _child(fake_root, out, "-1", options)
            assert done.returncode == 0, done.stderr
            made[options] = {name: (out / "run" / name).read_bytes() for name in RUN_FILES}
        return made[options]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("options", ["protocol", "all-options", "compact", "airbench"])
def test_a_run_killed_mid_epoch_resumes_to_exactly_the_uninterrupted_result(fake_root, tmp_path, options,
                                                                            straight_runs):
    # 500 fake images in batches of 64 make 8 batches an epoch: batch 19 is in the middle of epoch 3
    killed = _child(fake_root, tmp_path, "19", options)
    assert killed.returncode == -9, killed.stderr
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert len(ckpt["history"]) == 2 and not (tmp_path / "run" / "model.pt").exists()
    resumed = _child(fake_root, tmp_path, "-1", options)
    assert resumed.returncode == 0 and "resuming after epoch 2" in resumed.stdout, resumed.stderr
    assert {name: (tmp_path / "run" / name).read_bytes() for name in RUN_FILES} == straight_runs(options)


# Every file write of a run, killed right after it (before the next step) and half-way through it.
KILL_POINTS = ["after:config.json:1", "during:checkpoint.pt:1", "after:checkpoint.pt:2", "during:history.csv:2",
               "after:history.csv:2", "after:checkpoint.pt:3", "during:model.pt:1", "after:model.pt:1",
               "during:metrics.json:1", "after:metrics.json:1"]


@pytest.mark.slow
@pytest.mark.parametrize("kill", KILL_POINTS)
def test_a_run_killed_at_any_file_write_resumes_to_the_same_files(fake_root, tmp_path, kill, straight_runs):
    killed = _child(fake_root, tmp_path, kill)
    assert killed.returncode == -9, killed.stderr
    assert not list((tmp_path / "run").glob("*.tmp")) or kill.startswith("during")
    resumed = _child(fake_root, tmp_path, "-1")
    assert resumed.returncode == 0, resumed.stderr
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == RUN_FILES or (kill.startswith("during") and set(files) - set(RUN_FILES) <= {
        p.name for p in (tmp_path / "run").glob("*.tmp")}), files
    assert {name: (tmp_path / "run" / name).read_bytes() for name in RUN_FILES} == straight_runs("protocol")


def test_options_are_validated():
    with pytest.raises(ValueError, match="augment must be one of none, flip_crop"):
        H.TrainConfig(augment="mixup")
    with pytest.raises(ValueError, match="schedule must be one of"):
        H.TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="dirac, logit_scale apply to the compact network only"):
        H.TrainConfig(model="avgpool", dirac=True, logit_scale=0.5)
    with pytest.raises(ValueError, match="momentum must be in"):
        H.TrainConfig(optimizer="sgd", momentum=1.0)


def test_bn_shifts_get_their_own_rate_and_the_triangle_schedule_peaks_early():
    config = H.TrainConfig(model="compact", width=0.25, optimizer="sgd", lr=0.5, weight_decay=1e-3, bias_lr=64,
                           bn_scale=False, schedule="triangle", epochs=2)
    model = H.recipe.make_model(config)
    opt = H.recipe.make_optimizer(config, model)
    main, shifts = opt.param_groups
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {id(p) for p in shifts["params"]} == {id(m.bias) for m in bn}
    assert not any(id(m.weight) in {id(p) for p in main["params"]} for m in bn)     # fixed scales: not trained
    assert shifts["lr"] == 32.0 and shifts["lr"] * shifts["weight_decay"] == pytest.approx(main["lr"] * main["weight_decay"])
    sched = H.recipe.make_schedule(config, opt, steps_per_epoch=50)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(0.5, rel=0.02)
    assert 20 <= lrs.index(max(lrs)) <= 24 and lrs[-1] == pytest.approx(0.5 * H.recipe.triangle(0.99))
    assert H.recipe.triangle(1.0) == pytest.approx(0.07)
    assert opt.param_groups[1]["lr"] == pytest.approx(64 * opt.param_groups[0]["lr"])
    plain = H.recipe.make_optimizer(H.TrainConfig(model="avgpool"), H.build_model("avgpool"))
    assert len(plain.param_groups) == 1     # the report's Adam: one group, every parameter


def test_a_config_saved_before_new_options_existed_still_matches(fake_data, tmp_path):
    _fit(fake_data, tmp_path, model="avgpool")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    for new_field in ("batchnorm", "augment", "schedule", "label_smoothing", "tta_flip", "width"):
        saved.pop(new_field)
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    run = _fit(fake_data, tmp_path, model="avgpool")          # loads, no conflict
    assert run.config.augment == "none" and len(run.history) == 2
    # a field added later stays out of the identity that keys stored measurements while it has its default
    plain, refreshed = H.TrainConfig(batchnorm=True), H.TrainConfig(batchnorm=True, bn_refresh=True)
    assert "bn_refresh" not in plain.identity() and refreshed.identity()["bn_refresh"] is True
    assert plain.differences(refreshed) == {"bn_refresh": (False, True)}


def test_bn_refresh_needs_batchnorm_and_changes_evaluation_not_training(fake_data, tmp_path):
    with pytest.raises(ValueError, match="bn_refresh .* needs batchnorm=True"):
        H.TrainConfig(model="avgpool_dropout", bn_refresh=True)
    plain = _fit(fake_data, tmp_path, "plain", model="avgpool_dropout", batchnorm=True)
    fresh = _fit(fake_data, tmp_path, "fresh", model="avgpool_dropout", batchnorm=True, bn_refresh=True)
    pd.testing.assert_series_equal(plain.history["train_loss"], fresh.history["train_loss"])
    weights = [k for k in plain.model.state_dict() if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(plain.model.state_dict()[k], fresh.model.state_dict()[k]) for k in weights)
    # the saved statistics are the refreshed ones, so a loaded run evaluates as it was reported
    loaded = H.load_run(tmp_path / "fresh")
    _, test = H.runs.image_sets(loaded.config, fake_data)
    x, y = H.data.to_device(test, "cpu")
    assert H.evaluation.evaluate(loaded.model, x, y)["accuracy"] == pytest.approx(fresh.history["test_acc"].iloc[-1])
    assert not torch.equal(plain.model.state_dict()["bn1.running_var"], fresh.model.state_dict()["bn1.running_var"])


def test_one_cycle_schedule_ends_near_zero_and_options_train(fake_data, tmp_path):
    config = H.TrainConfig(model="avgpool_dropout", schedule="onecycle", augment="flip_crop", batchnorm=True,
                           label_smoothing=0.1, tta_flip=True, **TINY)
    opt = torch.optim.Adam(H.recipe.make_model(config).parameters(), lr=config.lr)
    sched = H.recipe.make_schedule(config, opt, steps_per_epoch=5)
    lrs = []
    for _ in range(9):      # the rate used by the 10th and last step is set by the 9th scheduler step
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert max(lrs) == pytest.approx(config.lr, rel=0.05) and lrs[-1] < config.lr / 1000
    run = H.fit(config, fake_data, run_name="opts", results_dir=tmp_path, progress=False, verbose=False)
    assert run.metrics["config"]["schedule"] == "onecycle" and len(run.history) == 2


def test_lookahead_pulls_the_weights_towards_their_slow_average():
    model = torch.nn.Linear(2, 1, bias=False)
    la = H.recipe.Lookahead(start=0.5, every=2, base=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    la.step(model, 1, 10)                      # before the start: nothing happens
    assert la.slow is None
    la.step(model, 6, 10)                      # first due step: the slow copy starts here
    with torch.no_grad():
        model.weight.fill_(3.0)
    la.step(model, 7, 10)                      # not a multiple of `every`: nothing happens
    assert model.weight.eq(3.0).all()
    la.step(model, 8, 10)
    rho = 0.9 ** 2 * 0.8 ** 3
    expected = 1.0 + (1 - rho) * 2.0
    assert torch.allclose(model.weight, torch.full_like(model.weight, expected))
    assert torch.allclose(la.slow["weight"], model.weight)
    with torch.no_grad():
        model.weight.fill_(0.0)
    la.end_epoch(model)                        # the model takes the slow weights
    assert torch.allclose(model.weight, torch.full_like(model.weight, expected))
