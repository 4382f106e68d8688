"""The report's writers under faults (issue 32): README sections, figures, the paper, caches, study tables,
the notebook runner and the data loader either do their job or stop with one message that names the file
or option, and leave every finished or hand-written file as it was."""
import importlib.util
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

import helpers as H
from conftest import REPO, write_fake_cifar

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TINY = dict(epochs=2, train_subset=200, test_subset=100)


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- README regions

PAGE = """# Title

Hand-written introduction.

<!-- one:start -->
old one
<!-- one:end -->

## Hand-written middle

<!-- two:start -->
old two
<!-- two:end -->

Hand-written end.
"""


def test_regions_are_replaced_together_and_hand_written_text_stays(tmp_path):
    page = tmp_path / "README.md"
    page.write_text(PAGE)
    H.files.replace_sections(page, {"one": "new one", "two": "new two"})
    text = page.read_text()
    assert "new one" in text and "new two" in text and "old" not in text
    for kept in ("Hand-written introduction.", "## Hand-written middle", "Hand-written end."):
        assert kept in text
    H.files.replace_sections(page, {"one": "new one", "two": "new two"})
    assert page.read_text() == text                      # a second run changes nothing


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("<!-- two:end -->\n", ""), r"<!-- two:end --> is missing"),
    (lambda t: t.replace("<!-- one:start -->\n", ""), r"<!-- one:start --> is missing"),
    (lambda t: t + "\n<!-- one:end -->\n", r"<!-- one:end --> appears 2 times \(lines 7, 17\)"),
    (lambda t: t.replace("<!-- one:start -->\nold one\n<!-- one:end -->", "<!-- one:end -->\nold one\n<!-- one:start -->"),
     r"<!-- one:end --> \(line 5\) comes before <!-- one:start --> \(line 7\)"),
    (lambda t: t.replace("<!-- one:end -->", "").replace("Hand-written end.", "<!-- one:end -->"),
     "overlap"),
], ids=["end missing", "start missing", "doubled", "reversed", "overlapping"])
def test_a_damaged_marker_stops_the_writer_and_nothing_is_written(tmp_path, edit, message):
    page = tmp_path / "README.md"
    page.write_text(edit(PAGE))
    before = page.read_bytes()
    for _ in range(2):                               # twice: the second run must not eat what the first left
        with pytest.raises(H.files.MarkerError, match=message):
            H.files.replace_sections(page, {"one": "new one", "two": "new two"})
        assert page.read_bytes() == before


def _update_readme(tmp_path, monkeypatch):
    """update_readme.py writing into a copy of the README and docs/using.md (so a test that fails cannot rewrite
    the real ones)."""
    update = _script("update_readme")
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copy(REPO / "README.md", copy / "README.md")
    (copy / "docs").mkdir()
    shutil.copy(REPO / "docs" / "using.md", copy / "docs" / "using.md")
    (copy / "notebooks").symlink_to(REPO / "notebooks")
    monkeypatch.setattr(update, "REPO", copy)
    return update, copy / "README.md"


def test_update_readme_refuses_a_mistyped_results_folder_and_leaves_the_readme(tmp_path, monkeypatch):
    update, readme = _update_readme(tmp_path, monkeypatch)
    before = readme.read_bytes()
    with pytest.raises(SystemExit, match="README.md was not changed: the results folder reslts does not exist"):
        update.main(["--results", "reslts"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="holds none of the report's runs"):
        update.main(["--results", str(empty)])
    assert readme.read_bytes() == before


def test_build_paper_refuses_the_same_folders_with_the_same_words(tmp_path):
    build = _script("build_paper")
    with pytest.raises(SystemExit, match="cannot build the paper: the results folder reslts does not exist"):
        build.main(["--results", "reslts", "--tables", str(tmp_path / "t"), "--output", str(tmp_path / "p.pdf")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="cannot build the paper: .* holds none of the report's runs"):
        build.main(["--results", str(tmp_path / "empty"), "--tables", str(tmp_path / "t"),
                    "--output", str(tmp_path / "p.pdf")])
    assert not (tmp_path / "t").exists() and not (tmp_path / "p.pdf").exists()


# ---------------------------------------------------------------- figures and the paper

def test_a_figure_that_fails_to_draw_replaces_neither_file(tmp_path, monkeypatch):
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    png, pdf = H.plots.save_figure(fig, "line", tmp_path)
    before = png.read_bytes(), pdf.read_bytes()
    ax.plot([0, 1], [1, 0])
    real = fig.savefig

    def fails_on_pdf(target, **options):
        if options.get("format") == "pdf":
            raise OSError(28, "No space left on device")
        return real(target, **options)
    monkeypatch.setattr(fig, "savefig", fails_on_pdf)
    with pytest.raises(OSError):
        H.plots.save_figure(fig, "line", tmp_path)
    assert (png.read_bytes(), pdf.read_bytes()) == before
    assert not list(tmp_path.glob("*.tmp"))
    plt.close(fig)


def test_the_paper_with_a_figure_missing_writes_nothing(tmp_path):
    figures = tmp_path / "figures"
    shutil.copytree(REPO / "figures", figures)
    (figures / "test_loss.pdf").unlink()
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "accuracy.csv").write_text("kept\n")
    with pytest.raises(H.paper.PaperError, match="test_loss.pdf.* Nothing was written"):
        H.paper.build("results", tmp_path / "report.pdf", tables_dir=tables, figures_dir=figures)
    assert [p.name for p in tables.iterdir()] == ["accuracy.csv"]
    assert (tables / "accuracy.csv").read_text() == "kept\n"
    assert not (tmp_path / "report.pdf").exists()


def test_a_paper_that_fails_to_compile_replaces_no_output(tmp_path, monkeypatch):
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "accuracy.csv").write_text("kept\n")
    (tmp_path / "report.pdf").write_bytes(b"%PDF- kept")

    def fails(*args, **kwargs):
        raise RuntimeError("error: unknown variable: d.nonsense")
    monkeypatch.setattr(H.paper, "_compile", fails)
    with pytest.raises(H.paper.PaperError, match="Typst could not compile .* Nothing was written"):
        H.paper.build("results", tmp_path / "report.pdf", tables_dir=tables)
    assert [p.name for p in tables.iterdir()] == ["accuracy.csv"] and (tables / "accuracy.csv").read_text() == "kept\n"
    assert (tmp_path / "report.pdf").read_bytes() == b"%PDF- kept"


# ---------------------------------------------------------------- finished runs read back

@pytest.fixture
def run_folder(fake_data, tmp_path):
    H.fit(H.TrainConfig(model="fc", **TINY), fake_data, run_name="fc", results_dir=tmp_path,
          progress=False, verbose=False)
    return tmp_path / "fc"


def _edit_csv(path, change):
    lines = path.read_text().splitlines()
    path.write_text("\n".join(change(lines)) + "\n")


HISTORY_FAULTS = [
    (lambda f: _edit_csv(f, lambda ls: [ls[0], ls[1], ",".join(ls[2].split(",")[:4] + ["0.9512"] + ls[2].split(",")[5:])]),
     r"final test accuracy of 0.9512, but metrics.json records"),
    (lambda f: _edit_csv(f, lambda ls: ls[:-1]), r"holds 1 rows .* trained epochs 1 to 2"),
    (lambda f: f.write_text(""), r"cannot be read as a run's history \(EmptyDataError"),
    (lambda f: f.write_bytes(bytes(range(256)) * 4), r"history\.csv (cannot be read as a run's history|lacks the column)"),
    (lambda f: _edit_csv(f, lambda ls: [ls[0].replace("test_acc", "accuracy"), *ls[1:]]), r"lacks the column\(s\) test_acc"),
]


@pytest.mark.parametrize("damage, message", HISTORY_FAULTS, ids=["edited", "row removed", "empty", "binary", "renamed"])
def test_a_damaged_history_is_refused_by_name(run_folder, damage, message):
    damage(run_folder / "history.csv")
    with pytest.raises(H.runs.RunDataError, match=message) as info:
        H.load_run(run_folder)
    assert "history.csv" in str(info.value)


def test_a_configuration_missing_a_field_is_not_filled_in(run_folder, fake_data):
    saved = json.loads((run_folder / "config.json").read_text())
    del saved["epochs"]
    (run_folder / "config.json").write_text(json.dumps(saved))
    (run_folder / "metrics.json").unlink()                # not finished: fit reads config.json
    with pytest.raises(H.runs.RunDataError, match=r"config.json is not a valid configuration \(the field\(s\) "
                                                     r"epochs are missing\)"):
        H.fit(H.TrainConfig(model="fc", **TINY), fake_data, run_name="fc", results_dir=run_folder.parent,
              progress=False, verbose=False)


def test_swapped_run_folders_are_refused(fake_data, tmp_path):
    for model in ("avgpool", "avgpool_dropout"):
        H.fit(H.TrainConfig(model=model, **TINY), fake_data, run_name=model, results_dir=tmp_path,
              progress=False, verbose=False)
    (tmp_path / "avgpool").rename(tmp_path / "swap")
    (tmp_path / "avgpool_dropout").rename(tmp_path / "avgpool")
    with pytest.raises(H.runs.RunDataError, match=r"holds a run of avgpool_dropout .* not avgpool"):
        H.results.load_runs(tmp_path)


# ---------------------------------------------------------------- caches

def test_a_retrained_run_is_measured_again_and_a_wrong_length_cache_too(run_folder, fake_data, capsys):
    run = H.load_run(run_folder)
    x, _ = H.data.to_device(H.data.balanced_subset(fake_data.test, 100), "cpu")
    first = H.results.test_predictions(run, x)
    key = json.loads((run_folder / "test_predictions.json").read_text())["key"]
    assert key["weights"] == H.files.weights_digest(run.model)
    with torch.no_grad():                                # retrained in place: other weights
        for p in run.model.parameters():
            p.mul_(-1)
    flipped = H.results.test_predictions(run, x)
    assert json.loads((run_folder / "test_predictions.json").read_text())["key"]["weights"] != key["weights"]
    assert first.shape == flipped.shape
    stored = json.loads((run_folder / "test_predictions.json").read_text())
    stored["value"]["predicted"] = stored["value"]["predicted"][:10]
    (run_folder / "test_predictions.json").write_text(json.dumps(stored))
    assert torch.equal(H.results.test_predictions(run, x), flipped)
    assert "does not hold what it should" in capsys.readouterr().out


def test_a_smaller_test_set_never_replaces_a_runs_measurements(run_folder, fake_data):
    run = H.load_run(run_folder)
    x, _ = H.data.to_device(H.data.balanced_subset(fake_data.test, 50), "cpu")
    with pytest.raises(H.runs.RunDataError, match=r"measured on 100 test images .* but 50 were given"):
        H.results.test_predictions(run, x)
    assert not (run_folder / "test_predictions.json").exists()


# ---------------------------------------------------------------- study tables

def _studies(tmp_path):
    folder = tmp_path / "results"
    shutil.copytree(REPO / "results" / "studies", folder / "studies")
    for step in (REPO / "results" / "ladder").glob("*/metrics.json"):
        (folder / "ladder" / step.parent.name).mkdir(parents=True)
        shutil.copy(step, folder / "ladder" / step.parent.name / "metrics.json")
    return folder


def test_the_committed_study_tables_pass_their_checks():
    for name in H.files.STUDY_COLUMNS:
        assert len(H.files.read_study_table("results", name))


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_text("\n".join(p.read_text().splitlines()[:10]) + "\n"), "lacks the finished ladder step"),
    (lambda p: p.write_text(p.read_text().replace(",False,", ",,", 1)), "empty cells in"),
    (lambda p: p.write_text(""), "is not a readable table"),
    (lambda p: p.write_text(p.read_text().replace("val acc,", "val accuracy,", 1)), r"lacks the column\(s\) val acc"),
], ids=["truncated", "empty cell", "empty file", "renamed column"])
def test_a_damaged_ladder_table_is_refused(tmp_path, damage, message):
    folder = _studies(tmp_path)
    damage(folder / "studies" / "ladder.csv")
    with pytest.raises(ValueError, match=message):
        H.files.read_study_table(folder, "ladder")


# ---------------------------------------------------------------- the notebook runner

def test_the_runner_selects_only_numbered_notebooks_that_exist(tmp_path):
    runner = _script("run_notebooks")
    names = sorted({p.stem for p in H.files.numbered_notebooks(REPO / "notebooks")} | set(runner.RENDERED))
    assert len(names) == 10 and all(n[:2].isdigit() for n in names)
    assert runner.select(["3"], names) == ["03_train_fc"]
    assert runner.select(["06", "1"], names) == ["01_data_exploration", "06_results_analysis"]
    with pytest.raises(SystemExit, match=r"no notebook numbered 99; the notebooks are:\n  01_data_exploration"):
        runner.select(["99"], names)
    for stray in ("06_results_analysis-Copy1.ipynb", "06_results_analysis.running.ipynb", "Untitled.ipynb"):
        (tmp_path / stray).write_text("{}")
    (tmp_path / "06_results_analysis.ipynb").write_text("{}")
    assert [p.name for p in H.files.numbered_notebooks(tmp_path)] == ["06_results_analysis.ipynb"]


def test_the_runner_refuses_a_parameter_no_notebook_declares():
    result = subprocess.run([sys.executable, "scripts/run_notebooks.py", "--output", "build/never", "-p", "lr", "0.01",
                             "-p", "lrr", "0.01"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "no notebook declares the parameter(s) lrr; the declared ones are: " in result.stderr
    assert "Traceback" not in result.stderr and not (REPO / "build" / "never").exists()


def test_a_parameter_only_other_notebooks_use_is_named(capsys):
    runner = _script("run_notebooks")
    everything = sorted({p.stem for p in H.files.numbered_notebooks(REPO / "notebooks")} | set(runner.RENDERED))
    runner.check_parameters({"lr": 0.01, "results_dir": "x"}, ["01_data_exploration"], everything)
    assert capsys.readouterr().out == "note: lr is not used by the notebooks run (01)\n"


# ---------------------------------------------------------------- data

def _copy_root(tmp_path):
    root = write_fake_cifar(tmp_path / "cifar")
    return root, root / "cifar-10-batches-py"


def test_a_test_batch_copied_over_a_training_batch_is_refused(tmp_path):
    root, folder = _copy_root(tmp_path)
    shutil.copy(folder / "test_batch", folder / "data_batch_5")
    with pytest.raises(H.DataError, match=r"200 of the 200 test images .* are also training images"):
        H.load_cifar10(root, download=False, verbose=False)


def test_a_cut_test_batch_is_named(tmp_path, capsys):
    root, folder = _copy_root(tmp_path)
    batch = pickle.loads((folder / "test_batch").read_bytes())
    batch["data"], batch["labels"] = batch["data"][:100], batch["labels"][:100]
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    H.load_cifar10(root, download=False, verbose=False)      # said even when the usual notes are off
    assert "holds 500 training images (CIFAR-10 has 50,000) and 100 test images (CIFAR-10 has 10,000)" in \
        capsys.readouterr().out


def test_an_unreadable_batch_is_one_message(tmp_path, monkeypatch):
    root, folder = _copy_root(tmp_path)
    real_open = open

    def refuse(path, *args, **kwargs):
        if str(path).endswith("data_batch_2"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(H.data, "open", refuse, raising=False)
    with pytest.raises(H.DataError, match=r"data_batch_2 cannot be read: permission denied"):
        H.load_cifar10(root, download=False, verbose=False)


def test_a_few_shared_images_are_named_not_refused(tmp_path, capsys):
    root, folder = _copy_root(tmp_path)
    test = pickle.loads((folder / "test_batch").read_bytes())
    train = pickle.loads((folder / "data_batch_1").read_bytes())
    train["data"] = np.concatenate([train["data"][:-3], test["data"][[4, 7, 9]]])
    (folder / "data_batch_1").write_bytes(pickle.dumps(train))
    H.load_cifar10(root, download=False, verbose=False)
    out = capsys.readouterr().out
    assert "3 test image(s)" in out and "test indices 4, 7, 9" in out


def test_a_dead_kernel_and_ctrl_c_are_one_message_each(tmp_path, monkeypatch, capsys):
    runner = _script("run_notebooks")
    from nbclient.exceptions import DeadKernelError

    def dies(*args, **kwargs):
        raise DeadKernelError("Kernel died")
    monkeypatch.setattr(runner.pm, "execute_notebook", dies)
    assert runner.main(["--output", str(tmp_path), "--only", "01"]) == 1
    err = capsys.readouterr().err
    assert "01_data_exploration.ipynb stopped: its Python kernel died" in err and "Traceback" not in err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner.pm, "execute_notebook", interrupted)
    assert runner.main(["--output", str(tmp_path), "--only", "01"]) == 130
    err = capsys.readouterr().err
    assert "stopped (Ctrl-C)" in err and "Traceback" not in err
    ip = Path(runner.kernel_config().KernelManager.ip)          # where a kernel's sockets go
    assert not ip.is_relative_to(REPO) and ip.parent.is_dir()


def test_a_corrupt_study_summary_leaves_the_readme_whole(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    for entry in (REPO / "results").iterdir():
        if entry.name != "studies":
            (results / entry.name).symlink_to(entry)
    shutil.copytree(REPO / "results" / "studies", results / "studies")
    (results / "studies" / "cam_statistics.json").write_text('{"key": "compa')
    update, readme = _update_readme(tmp_path, monkeypatch)
    before = readme.read_bytes()
    with pytest.raises(SystemExit, match=r"README.md was not changed: .*cam_statistics.json is not readable JSON"):
        update.main(["--results", str(results)])
    assert readme.read_bytes() == before


def test_a_trial_report_into_another_results_folder_never_touches_the_committed_one():
    plan = subprocess.run(["make", "-n", "report", "RESULTS=results-trial", "ONLY=3"], cwd=REPO, capture_output=True,
                          text=True, timeout=60).stdout
    assert "--output build/results-trial/notebooks" in plan and "--in-place" not in plan
    assert "figures_dir" in plan and "build/results-trial/figures" in plan
    assert "update_readme.py" not in plan and "build/results-trial/report.pdf" in plan
    committed = subprocess.run(["make", "-n", "report"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert "--in-place" in committed and "update_readme.py --results results" in committed


def test_update_readme_writes_both_pages_or_neither(tmp_path, monkeypatch):
    update, readme = _update_readme(tmp_path, monkeypatch)
    using = readme.parent / "docs" / "using.md"
    update.main([])
    assert "| Fully connected head |" in readme.read_text() and "| `01_data_exploration` |" in using.read_text()
    using.write_text(using.read_text().replace("<!-- times:end -->", ""))       # a damaged marker in the second page
    before = readme.read_bytes(), using.read_bytes()
    with pytest.raises(SystemExit, match=r"README.md was not changed: .*using.md: the marker <!-- times:end --> is missing"):
        update.main([])
    assert (readme.read_bytes(), using.read_bytes()) == before
