"""Bad inputs and faults, as a new user meets them: each gets a message that names the file or the
option and says what to do, and none of them changes a finished run.

Every case runs beside a finished run (``done``) in the same results folder; after the case, that
run's files must be byte-for-byte what they were.
"""
import errno
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import helpers as H

TINY = dict(epochs=2, train_subset=200, test_subset=100)
RUN_FILES = ("config.json", "history.csv", "metrics.json", "model.pt")


@pytest.fixture
def results(fake_data, tmp_path):
    """A results folder holding one finished run, ``done``; the test checks it is untouched at the end."""
    folder = tmp_path / "results"
    H.fit(H.TrainConfig(model="avgpool", **TINY), fake_data, run_name="done", results_dir=folder,
          progress=False, verbose=False)
    before = {name: (folder / "done" / name).read_bytes() for name in RUN_FILES}
    yield folder
    assert {name: (folder / "done" / name).read_bytes() for name in RUN_FILES} == before, "finished run changed"
    assert not list(folder.rglob("*.tmp")), "a temporary file was left behind"


def _fit(data, results, name="run", **options):
    return H.fit(H.TrainConfig(**{"model": "avgpool", **TINY, **options}), data, run_name=name,
                 results_dir=results, progress=False, verbose=False)


# ---------------------------------------------------------------- options

BAD_OPTIONS = [
    (dict(train_subset=0), "train_subset"),
    (dict(train_subset=-100), "train_subset"),
    (dict(train_subset=15), "train_subset must be None .* a positive multiple of 10"),
    (dict(test_subset=0), "test_subset"),
    (dict(validation=-100), "validation must be 0"),
    (dict(validation=25), "validation must be 0"),
    (dict(epochs=2.5), "epochs must be a whole number"),
    (dict(epochs=0), "epochs and batch_size must be positive"),
    (dict(lr=-1e-3), "lr must be positive"),
    (dict(lr=float("nan")), "lr must be a finite number"),
    (dict(weight_decay=-1e-6), "weight_decay zero or positive"),
    (dict(model="resnet18"), "model must be one of fc, avgpool, avgpool_dropout, compact; got 'resnet18'"),
    (dict(head="softmax"), "head must be one of linear, author"),
    (dict(precision="fp16"), "precision must be one of fp32, bf16, auto"),
    (dict(label_smoothing=1.5), "label_smoothing must be in \\[0, 1\\)"),
    (dict(width=0), "width must be positive"),
    (dict(model="avgpool", bn_momentum=0.5), "bn_momentum applies to the compact network only"),
    (dict(crop_pad=32), "crop_pad and tta_shift from 0 to 15 pixels"),
    (dict(model="compact", optimizer="sgd", bias_lr=float("inf")), "bias_lr must be a finite number"),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS, ids=[str(o) for o, _ in BAD_OPTIONS])
def test_a_bad_option_is_refused_when_the_configuration_is_built(options, message):
    with pytest.raises(ValueError, match=message):
        H.TrainConfig(**options)


BAD_SIZES = [
    (dict(validation=490, train_subset=None), "validation=490 leaves 10 of the 500 training images"),
    (dict(train_subset=1000), "train_subset=1,000 asks for more images than there are \\(500\\)"),
    (dict(test_subset=500), "test_subset=500 asks for more images than there are \\(200\\)"),
    (dict(model="fc", head="author"), "head='author' only applies to the average-pooling models"),
    (dict(model="fc", convs=5), "convs < 7 applies to the average-pooling models"),
]


@pytest.mark.parametrize("options, message", BAD_SIZES, ids=[str(o) for o, _ in BAD_SIZES])
def test_a_configuration_that_fails_writes_nothing_and_the_corrected_one_trains(fake_data, results, options,
                                                                                  message):
    with pytest.raises(ValueError, match=message):
        _fit(fake_data, results, **options)
    assert not (results / "run" / "config.json").exists()      # nothing blocks the corrected retry
    assert len(_fit(fake_data, results).history) == 2


# ---------------------------------------------------------------- data files

def _copy(fake_root, tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(fake_root, root)
    return root


def _rewrite(folder: Path, name: str, change) -> None:
    with open(folder / name, "rb") as f:
        batch = pickle.load(f)
    change(batch)
    with open(folder / name, "wb") as f:
        pickle.dump(batch, f)


class _Boom:
    """A pickle that would run a command when loaded."""
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _drop_class(batch):
    keep = [i for i, label in enumerate(batch["labels"]) if label != 3]
    batch["data"], batch["labels"] = batch["data"][keep], [batch["labels"][i] for i in keep]


def _empty(batch):
    batch["data"], batch["labels"] = batch["data"][:0], []


BAD_DATA = [
    ("test_batch", _empty, "test_batch holds no images"),
    ("test_batch", _drop_class, "test_batch has no image of class cat"),
    ("data_batch_2", lambda b: b.update(labels=[float(v) for v in b["labels"]]),
     "data_batch_2: labels must be a list of integers 0-9, got float64"),
    ("data_batch_2", lambda b: b.update(labels=[str(v) for v in b["labels"]]),
     "data_batch_2: labels must be a list of integers"),
    ("data_batch_4", lambda b: b.update(data=b["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)),
     "data_batch_4: the images are stored channel-last"),
    ("data_batch_1", lambda b: b.update(data=b["data"].astype(np.float32)),
     "data_batch_1: expected uint8 image rows"),
    ("data_batch_5", lambda b: b.update(labels=b["labels"][:-1]), "data_batch_5: 100 images but 99 labels"),
    ("data_batch_3", lambda b: b.update(labels=[12] * len(b["labels"])), "data_batch_3: labels must lie in 0..9"),
    ("data_batch_1", lambda b: b.update(data=_Boom()), "data_batch_1 is truncated, corrupt or not a CIFAR-10 "
                                                       "batch .*asks to load .*system.*refused"),
]


@pytest.mark.parametrize("name, change, message", BAD_DATA, ids=[m.split(":")[0][:40] for _, _, m in BAD_DATA])
def test_data_that_loads_but_is_wrong_is_named(fake_root, tmp_path, monkeypatch, name, change, message):
    root = _copy(fake_root, tmp_path)
    _rewrite(root / "cifar-10-batches-py", name, change)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(H.DataError, match=message):
        H.load_cifar10(root, download=False, verbose=False)
    assert not (tmp_path / "pwned").exists()        # the refused pickle ran nothing


def test_a_missing_test_batch_is_named_not_downloaded(fake_root, tmp_path):
    root = _copy(fake_root, tmp_path)
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(H.DataError, match="incomplete: test_batch is missing"):
        H.load_cifar10(root, download=True, verbose=False)


def test_a_data_root_that_is_a_file_is_named(tmp_path):
    (tmp_path / "cifar").write_text("not a folder")
    with pytest.raises(H.DataError, match="the data root .*cifar is a file, not a folder"):
        H.load_cifar10(tmp_path / "cifar", download=True, verbose=False)


def test_a_data_root_that_cannot_be_created_is_named(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(H.DataError, match="CIFAR-10 was not found in .*file/data/cifar-10-batches-py and could not "
                                          "be downloaded \\((NotADirectoryError|FileExistsError)"):
        H.load_cifar10(tmp_path / "file" / "data", download=True, verbose=False)


def test_cifar10_root_pointing_nowhere_is_named_and_not_created(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(H.DataError, match="CIFAR10_ROOT=.*nowhere is not an existing folder"):
        H.load_cifar10(verbose=False)
    assert not (tmp_path / "nowhere").exists()


# ---------------------------------------------------------------- run folders

def _checkpoint_after_one_epoch(data, results):
    """An interrupted run: two epochs asked, killed after the first (its checkpoint kept)."""
    real = H.training._stop_if_diverged
    calls = [0]

    def stop_after_first(loss, what, epoch, config, path):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(loss, what, epoch, config, path)
    H.training._stop_if_diverged = stop_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            _fit(data, results)
    finally:
        H.training._stop_if_diverged = real
    assert (results / "run" / "checkpoint.pt").exists() and calls == [0]
    return results / "run" / "checkpoint.pt"


BAD_CHECKPOINTS = {
    "truncated": lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),
    "empty": lambda f: f.write_bytes(b""),
    "code": lambda f: f.write_bytes(pickle.dumps(_Boom())),
    "foreign": lambda f: torch.save({"weights": torch.zeros(3)}, f),
}


@pytest.mark.parametrize("damage", list(BAD_CHECKPOINTS))
def test_a_damaged_checkpoint_is_named_with_what_to_do(fake_data, results, tmp_path, monkeypatch, damage):
    ckpt = _checkpoint_after_one_epoch(fake_data, results)
    BAD_CHECKPOINTS[damage](ckpt)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(H.RunDataError, match="run/checkpoint.pt cannot be read .*delete it to train this run again"):
        _fit(fake_data, results)
    assert not (tmp_path / "pwned").exists()
    ckpt.unlink()                                   # what the message says to do
    assert len(_fit(fake_data, results).history) == 2


@pytest.mark.parametrize("name", ["config.json", "metrics.json"])
def test_an_unreadable_json_file_of_a_run_is_named(fake_data, results, name):
    _fit(fake_data, results)
    (results / "run" / name).write_text('{"config": {"model": "avgp')
    with pytest.raises(H.RunDataError, match=f"run/{name} is not readable JSON"):
        _fit(fake_data, results)
    if name == "metrics.json":
        with pytest.raises(H.RunDataError, match=f"run/{name} is not readable JSON"):
            H.load_run(results / "run")


def test_a_finished_run_without_its_weights_is_refused_not_retrained(fake_data, results):
    _fit(fake_data, results)
    (results / "run" / "model.pt").unlink()
    history = (results / "run" / "history.csv").read_bytes()
    with pytest.raises(H.RunDataError, match="run/model.pt is missing: the run finished .* random weights"):
        H.load_run(results / "run")
    with pytest.raises(H.RunDataError, match="run/model.pt is missing"):
        _fit(fake_data, results)
    assert (results / "run" / "history.csv").read_bytes() == history
    assert len(H.load_run(results / "run", weights=False).history) == 2     # the numbers alone still load


def test_a_diverging_run_stops_names_the_epoch_and_keeps_the_last_good_checkpoint(fake_data, results, monkeypatch):
    real = H.training.evaluate

    def nan_in_epoch_2(model, *args, **kwargs):
        out = real(model, *args, **kwargs)
        if nan_in_epoch_2.calls == 1:
            out = {**out, "loss": float("nan")}
        nan_in_epoch_2.calls += 1
        return out
    nan_in_epoch_2.calls = 0
    monkeypatch.setattr(H.training, "evaluate", nan_in_epoch_2)
    with pytest.raises(H.DivergedError, match="test loss is nan in epoch 2: training diverged with lr=0.001 .*"
                                              "checkpoint after epoch 1 is kept.*lower learning rate"):
        _fit(fake_data, results)
    run = results / "run"
    assert not (run / "metrics.json").exists() and not (run / "model.pt").exists()
    assert len(torch.load(run / "checkpoint.pt", weights_only=True)["history"]) == 1
    assert len((run / "history.csv").read_text().splitlines()) == 2       # header and epoch 1


def test_a_huge_learning_rate_diverges_with_a_message(fake_data, results):
    with pytest.raises(H.DivergedError, match="training diverged with lr=1e\\+30"):
        _fit(fake_data, results, model="fc", lr=1e30)
    assert not (results / "run" / "metrics.json").exists()


def test_a_second_process_is_refused_while_the_first_trains(fake_data, results):
    (results / "run").mkdir()
    with H.files.FolderLock(results / "run"):                 # stands for another process training here
        with pytest.raises(H.RunBusyError, match=f"run is being trained by process {os.getpid()}"):
            _fit(fake_data, results)
    assert not (results / "run" / ".lock").exists()
    (results / "run" / ".lock").write_text("process 999999 on a machine that crashed")     # a stale lock
    assert len(_fit(fake_data, results).history) == 2
    assert not (results / "run" / ".lock").exists()


def test_a_full_disk_leaves_the_previous_checkpoint_and_says_so(fake_data, results, monkeypatch):
    ckpt = _checkpoint_after_one_epoch(fake_data, results)
    before = ckpt.read_bytes()
    real_save = torch.save

    def no_space(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(OSError, match="could not write .*run/checkpoint.pt \\(No space left on device\\); its "
                                      "previous version is intact"):
        _fit(fake_data, results)
    assert ckpt.read_bytes() == before and not list(ckpt.parent.glob("*.tmp"))
    monkeypatch.setattr(torch, "save", real_save)
    assert len(_fit(fake_data, results).history) == 2           # the retry resumes from it


def test_a_conflicting_configuration_keeps_the_finished_run_and_never_advises_deleting(fake_data, results):
    with pytest.raises(H.RunConflictError) as info:
        _fit(fake_data, results, name="done", epochs=3)
    assert "epochs: 2 there, 3 now" in str(info.value) and "delete" not in str(info.value).lower()


def test_a_finished_run_without_its_config_file_is_still_compared(fake_data, results):
    (results / "done" / "config.json").rename(results / "config.json.aside")
    try:
        with pytest.raises(H.RunConflictError, match="finished run of another configuration .*epochs: 2 there, 3 now"):
            _fit(fake_data, results, name="done", epochs=3)
    finally:
        (results / "config.json.aside").rename(results / "done" / "config.json")


def test_a_protocol_5_pickle_of_the_same_arrays_is_accepted(fake_root, tmp_path):
    root = _copy(fake_root, tmp_path)
    folder = root / "cifar-10-batches-py"
    with open(folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(batch, f, protocol=5)
    assert len(H.load_cifar10(root, download=False, verbose=False).train) == 500
