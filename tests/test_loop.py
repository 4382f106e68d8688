"""The plain loop shown in notebooks 03-05 is what ``fit`` runs, bit for bit, and it trains exactly as the
loop inside ``fit`` did before it was split out (so the committed runs stay valid)."""
import dataclasses

import torch
import torch.nn.functional as F

import helpers as H
from helpers import data as D
from helpers.loop import autocast
from helpers.recipe import Lookahead, make_model, make_optimizer, make_schedule

RECIPES = {
    "protocol": H.TrainConfig(model="avgpool_dropout", epochs=2, batch_size=64, train_subset=200, test_subset=100,
                              seed=4),
    "compact": H.TrainConfig(model="compact", width=0.25, epochs=2, batch_size=50, lr=0.05, optimizer="sgd",
                             bias_lr=8, schedule="triangle", lookahead=True, augment="flip_crop", crop_pad=2,
                             label_smoothing=0.2, train_subset=200, test_subset=100, seed=2),
}


def _start(config: H.TrainConfig, data):
    """What ``fit`` does before its first epoch: the images, the seeds, the model and its optimiser."""
    train, test = H.runs.image_sets(config, data)
    x, y = D.to_device(train, torch.device("cpu"), True)
    torch.manual_seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
    model = make_model(config).to(memory_format=torch.channels_last)
    return x, y, test, shuffle, model, make_optimizer(config, model)


def _reference_epochs(config: H.TrainConfig, data) -> tuple[dict, list]:
    """The epoch loop as it stood inside ``fit`` before the split (frozen copy; do not edit)."""
    x, y, _, shuffle, model, opt = _start(config, data)
    n_batches = -(-len(y) // config.batch_size)
    schedule = make_schedule(config, opt, n_batches)
    lookahead = Lookahead() if config.lookahead else None
    losses = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.int64)
        for i, (xb, yb) in enumerate(D.batches(x, y, config.batch_size, shuffle), start=1):
            if config.augment == "flip_crop":
                xb = D.flip_and_crop(xb, shuffle, pad=config.crop_pad)
            with autocast(torch.device("cpu"), config.precision):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if schedule is not None:
                schedule.step()
            if lookahead is not None:
                lookahead.step(model, (epoch - 1) * n_batches + i, config.epochs * n_batches)
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
        if lookahead is not None:
            lookahead.end_epoch(model)
        losses.append((loss_sum.item() / len(y), correct.item() / len(y)))
    return model.state_dict(), losses


def _plain_loop(config: H.TrainConfig, data) -> tuple[dict, list]:
    """What the notebooks show: build, then ``train_one_epoch`` and ``evaluate`` once per epoch."""
    x, y, test, shuffle, model, optimizer = _start(config, data)
    rows = []
    for _ in range(config.epochs):
        train_loss, train_acc = H.train_one_epoch(model, D.batches(x, y, config.batch_size, shuffle), optimizer)
        result = H.evaluate(model, *D.to_device(test, torch.device("cpu"), True))
        rows.append((train_loss, train_acc, result["loss"], result["accuracy"]))
    return model.state_dict(), rows


def test_the_split_loop_trains_as_the_loop_before_it(fake_data, tmp_path):
    for name, config in RECIPES.items():
        before, losses = _reference_epochs(config, fake_data)
        run = H.fit(config, fake_data, run_name=name, results_dir=tmp_path, verbose=False, progress=False)
        after = run.model.state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before), name
        assert losses == list(zip(run.history["train_loss"], run.history["train_acc"])), name


def test_fit_is_the_plain_loop_of_the_notebooks(fake_data, tmp_path):
    config = RECIPES["protocol"]
    weights, rows = _plain_loop(config, fake_data)
    run = H.fit(config, fake_data, run_name="plain", results_dir=tmp_path, verbose=False, progress=False)
    assert all(torch.equal(weights[k], v) for k, v in run.model.state_dict().items())
    assert rows == list(run.history[["train_loss", "train_acc", "test_loss", "test_acc"]].itertuples(index=False,
                                                                                                       name=None))
    # the same seed with another learning rate trains something else: the comparison can fail
    other, _ = _plain_loop(dataclasses.replace(config, lr=3e-3), fake_data)
    assert not all(torch.equal(other[k], v) for k, v in weights.items())
