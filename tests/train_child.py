"""Run by the tests in a subprocess: train on the fake data and optionally die at a chosen moment.

    python train_child.py ROOT RESULTS KILL [OPTIONS]

KILL is -1 (never), a batch number (SIGKILL when that batch is drawn), ``after:FILE:N`` (SIGKILL right
after the N-th finished write of FILE, before the next step) or ``during:FILE:N`` (SIGKILL half-way
through writing it). The clock is replaced by a counter, so that the seconds in history.csv and
metrics.json are the same in every run and a resumed run's files can be compared byte for byte.
"""
import itertools
import os
import signal
import sys

import torch

import helpers as H
from helpers import data as D
from helpers import files, training

root, results, kill = sys.argv[1], sys.argv[2], sys.argv[3]
OPTIONS = {
    "protocol": {},
    "all-options": dict(batchnorm=True, augment="flip_crop", schedule="onecycle", label_smoothing=0.1, tta_flip=True),
    "compact": dict(model="compact", width=0.25, whiten=True, optimizer="sgd", lr=0.05, weight_decay=5e-4,
                    lookahead=True, augment="flip_crop", crop_pad=2, schedule="onecycle", label_smoothing=0.2,
                    tta_flip=True, tta_shift=1),
    "airbench": dict(model="compact", width=0.25, whiten=True, optimizer="sgd", lr=0.5, momentum=0.85,
                     weight_decay=1e-3, bias_lr=64, dirac=True, bn_scale=False, bn_momentum=0.6, logit_scale=1 / 9,
                     schedule="triangle", lookahead=True, augment="flip_crop"),
}
config = dict(model="avgpool_dropout", epochs=3, seed=5)
config.update(OPTIONS[sys.argv[4] if len(sys.argv) > 4 else "protocol"])
torch.set_num_threads(1)
ticks = itertools.count()
training.time.perf_counter = lambda: float(next(ticks))


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if kill.lstrip("-").isdigit() and int(kill) >= 0:
    original, seen = D.batches, [0]

    def batches_then_die(*args, **kwargs):
        for item in original(*args, **kwargs):
            if seen[0] == int(kill):
                die()
            seen[0] += 1
            yield item
    D.batches = batches_then_die
elif ":" in kill:
    when, name, n = kill.split(":")
    real_write, count = files.atomic_write, [0]

    def write_then_die(path, write):
        if os.path.basename(str(path)) != name:
            return real_write(path, write)
        count[0] += 1
        if count[0] == int(n) and when == "during":
            def half(f):
                write(f)
                f.flush()
                f.truncate(max(1, f.tell() // 2))
                die()
            return real_write(path, half)
        real_write(path, write)
        if count[0] == int(n):
            die()
    training.atomic_write = write_then_die
    files.atomic_write = write_then_die
data = H.load_cifar10(root, download=False, verbose=False)
H.fit(H.TrainConfig(**config), data, run_name="run", results_dir=results, progress=False)
