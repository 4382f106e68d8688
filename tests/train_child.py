"""Run by test_training.py in a subprocess: train on the fake data, optionally SIGKILL itself mid-epoch."""
import os
import signal
import sys

import torch

import helpers as H
from helpers import data as D

root, results, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
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
if kill_at >= 0:
    original, seen = D.batches, [0]

    def batches_then_die(*args, **kwargs):
        for item in original(*args, **kwargs):
            if seen[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            seen[0] += 1
            yield item
    D.batches = batches_then_die
data = H.load_cifar10(root, download=False, verbose=False)
H.fit(H.TrainConfig(**config), data, run_name="run", results_dir=results, progress=False)
