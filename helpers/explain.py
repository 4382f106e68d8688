"""Where a trained network finds the evidence for a class: class activation maps and Grad-CAM.

* **CAM** (Zhou, Khosla, Lapedriza, Oliva and Torralba, CVPR 2016, "Learning Deep Features for
  Discriminative Localization") applies where a class score is a linear function of spatially
  averaged feature maps: the score is then the sum of a map over positions, and the map shows where
  the evidence sits. Models 2 and 3 are of this kind with one twist: their last convolution gives
  4x4 maps, a 2x2 max-pool (pool7) keeps one position of each 2x2 block, and only then comes the
  average. ``cam`` puts each kept value back at the position the max-pool took it from, so the map is
  exact at 4x4: its 16 cells plus the classifier's bias add up to the class score (tested). At 2x2
  (after pool7) it would also be exact but coarser; before pool7 without the routing it would not be
  exact.
* **Grad-CAM** (Selvaraju, Cogswell, Das, Vedantam, Parikh and Batra, ICCV 2017) serves model 1,
  whose fully connected head has no such map: the same 4x4 feature maps (before pool7), each weighted
  by the spatial mean of the class score's gradient with respect to it, summed, negative parts set
  to zero. Computed for model 2 as well, it shows how far Grad-CAM agrees with the exact map where
  one exists.

``cam_statistics`` measures all test images once and keeps the numbers in a JSON file.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .evaluation import eval_mode
from .facts import facts
from .files import cached, digest, project_path, weights_digest
from .runs import check_measured_on, Run

CUT = "pool7"                                  # the maps are the input of this layer: 4x4 after conv7
CENTRE = (slice(1, 3), slice(1, 3))            # the central 2x2 cells of a 4x4 map: the central 16x16 pixels


def feature_maps(model: torch.nn.Module, images: torch.Tensor, leaf: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of ``images`` and the 4x4 maps that enter ``pool7`` (after conv7 and its ReLU), taken
    on the way through the model's own ``forward``. With ``leaf`` the maps are a new leaf tensor that the
    rest of the forward pass uses, so that a gradient of the logits reaches them."""
    cut = getattr(model, CUT, None)
    if not isinstance(cut, torch.nn.MaxPool2d):
        raise ValueError(f"class activation maps need one of the report's three models (a max-pool named {CUT!r})")
    seen = {}

    def keep(module, inputs):
        maps = inputs[0].float()
        seen["maps"] = maps.detach().requires_grad_(True) if leaf else maps
        return (seen["maps"],) if leaf else None

    handle = cut.register_forward_pre_hook(keep)
    try:
        logits = model(images)
    finally:
        handle.remove()
    return logits, seen["maps"]


def cam(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, 10) and class activation maps (N, 10, 4, 4) of an average-pooling model with the
    10-way head, for normalised ``images``; each map's cells plus the bias give that class's logit."""
    if not isinstance(getattr(model, "avgpool", None), torch.nn.AvgPool2d) or not isinstance(
            getattr(model, "classifier", None), torch.nn.Linear):
        raise ValueError("CAM needs an average-pooling model with the 10-way head (models 2 and 3); "
                         "use grad_cam for the fully connected model")
    weight, bias = model.classifier.weight.float(), model.classifier.bias.float()
    all_logits, all_maps = [], []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            features = feature_maps(model, images[start:start + batch_size])[1]          # N, K, 4, 4
            kept, where = F.max_pool2d(features, 2, return_indices=True)                  # N, K, 2, 2
            routed = torch.zeros_like(features).flatten(2).scatter_(2, where.flatten(2), kept.flatten(2))
            maps = torch.einsum("nkp,ck->ncp", routed, weight) / kept[0, 0].numel()       # mean over 2x2
            all_maps.append(maps.view(len(features), -1, *features.shape[2:]))
            all_logits.append(maps.sum(2) + bias)
    return torch.cat(all_logits), torch.cat(all_maps)


def grad_cam(model: torch.nn.Module, images: torch.Tensor, classes: torch.Tensor | None = None,
             batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, 10) and Grad-CAM maps (N, 4, 4) of the 4x4 maps before pool7 for ``classes`` (one class
    per image; default: the predicted one)."""
    was_training = model.training
    model.eval()
    all_logits, all_maps = [], []
    try:
        for start in range(0, len(images), batch_size):
            with torch.enable_grad():
                logits, features = feature_maps(model, images[start:start + batch_size], leaf=True)
                logits = logits.float()
                target = logits.argmax(1) if classes is None else classes[start:start + batch_size]
                score = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
                grads, = torch.autograd.grad(score, features)
            weights = grads.mean((2, 3), keepdim=True)
            all_maps.append(F.relu((weights * features).sum(1)).detach())
            all_logits.append(logits.detach())
    finally:
        model.train(was_training)
    return torch.cat(all_logits), torch.cat(all_maps)


def centre_share(maps: torch.Tensor) -> torch.Tensor:
    """Per map (N, 4, 4): the share of its positive mass in the central 2x2 cells (the central quarter of
    the image; 0.25 if the evidence were spread evenly); NaN for a map with no positive cell."""
    positive = maps.clamp(min=0)
    total = positive.sum((1, 2))
    centre = positive[:, CENTRE[0], CENTRE[1]].sum((1, 2))
    return torch.where(total > 0, centre / total.clamp(min=1e-12), torch.full_like(total, math.nan))


def agreement(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per pair of maps (N, 4, 4): Pearson's correlation of their positive parts over the 16 cells
    (NaN where either is constant)."""
    x, y = a.clamp(min=0).flatten(1), b.clamp(min=0).flatten(1)
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    norm = x.norm(dim=1) * y.norm(dim=1)
    return torch.where(norm > 0, (x * y).sum(1) / norm.clamp(min=1e-12), torch.full_like(norm, math.nan))


def maps_for(models: dict, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """For each model, the map of its predicted and of the true class (N, 4, 4) and its predictions:
    CAM where the model has one, Grad-CAM otherwise. Also Grad-CAM of every model (``"grad_cam"``)."""
    out = {}
    for name, model in models.items():
        logits, gc_pred = grad_cam(model, images)
        entry = {"predicted": logits.argmax(1), "grad_cam": gc_pred, "method": "Grad-CAM"}
        try:
            cam_logits, maps = cam(model, images)
        except ValueError:            # no exact map: Grad-CAM of the true class too (computed only here)
            entry.update(pred_map=gc_pred, true_map=grad_cam(model, images, labels)[1])
        else:
            rows = torch.arange(len(images))
            entry.update(pred_map=maps[rows, cam_logits.argmax(1)], true_map=maps[rows, labels], method="CAM")
        out[name] = entry
    return out


def _mean(values: torch.Tensor, scale: float = 100) -> float:
    kept = values[~values.isnan()]
    return kept.mean().item() * scale if len(kept) else math.nan


def cam_statistics(runs: dict[str, Run], images: torch.Tensor, labels: torch.Tensor, path) -> dict:
    """Over all ``images``: each model's accuracy, its maps' share of evidence in the centre (predicted
    class, in percent; right and wrong answers apart) and the agreement between maps (mean correlation);
    kept in ``path`` (relative to the project, like every results path)."""
    for run in runs.values():
        check_measured_on(run, images)

    def measure():
        found = maps_for({name: run.model for name, run in runs.items()}, images, labels)
        models = {}
        for name, m in found.items():
            right = m["predicted"] == labels
            share = centre_share(m["pred_map"])
            models[name] = {"method": m["method"], "accuracy": right.float().mean().item() * 100,
                            "centre share": _mean(share), "centre share right": _mean(share[right]),
                            "centre share wrong": _mean(share[~right]),
                            "grad_cam agrees with cam": _mean(agreement(m["grad_cam"], m["pred_map"]), 1)
                            if m["method"] == "CAM" else math.nan}
        names = list(found)
        pairs = {f"{a} / {b}": _mean(agreement(found[a]["true_map"], found[b]["true_map"]), 1)
                 for i, a in enumerate(names) for b in names[i + 1:]}
        return {"models": models, "agreement (true class)": pairs, "images": len(labels)}
    key = {"images": digest(images, labels), "runs": {name: run.config.identity() for name, run in runs.items()},
           "weights": {name: weights_digest(run.model) for name, run in runs.items()}}
    return cached(project_path(path), key, measure)


SHORT = {"fc": "fc", "avgpool": "avgpool", "avgpool_dropout": "dropout"}   # field-name stems for the templates


def _verdict(values, above: float) -> str:
    return "all" if all(v > above for v in values) else "none" if all(v <= above for v in values) else "some"


def cam_fields(stats: dict) -> dict:
    """The numbers and verdicts that ``report/text/cams.md`` needs, from ``cam_statistics``."""
    models = stats["models"]
    fields = {"images": stats["images"]}
    for name, short in SHORT.items():
        m = models[name]
        fields.update({f"share_{short}": m["centre share"], f"right_{short}": m["centre share right"],
                       f"wrong_{short}": m["centre share wrong"]})
        if m["method"] == "CAM":
            fields[f"gc_{short}"] = m["grad_cam agrees with cam"]
    for pair, r in stats["agreement (true class)"].items():
        a, b = pair.split(" / ")
        fields[f"r_{SHORT[a]}_{SHORT[b]}"] = r
    shares = [models[n]["centre share"] for n in SHORT]
    fields["centre_verdict"] = {
        "all": "all three favour the centre" + (", yet most of their evidence lies outside it" if max(shares) < 50 else ""),
        "none": "none of them favours the centre", "some": "they differ in whether they favour the centre"}[
        _verdict(shares, 25)]
    gaps = [models[n]["centre share right"] - models[n]["centre share wrong"] for n in SHORT]
    fields["right_verdict"] = {"all": "more than", "none": "no more than", "some": "not consistently more than"}[
        _verdict(gaps, 0)]
    mean_r = sum(stats["agreement (true class)"].values()) / len(stats["agreement (true class)"])
    fields["agree_verdict"] = "little" if mean_r < 0.3 else "moderately" if mean_r < 0.6 else "closely"
    fields["r_max"] = max(stats["agreement (true class)"].values())
    fields = facts("cams", fields, {k: short for k in fields for start, short in CAM_FORMS.items()
                                    if k.startswith(start)})
    order = sorted(SHORT, key=lambda n: models[n]["centre share"])
    fields["centre_range"] = f"{fields['share_' + SHORT[order[0]]]}–{fields['share_' + SHORT[order[-1]]]}%"
    return fields


# How the statistics are stated (``helpers/facts.py``), by the start of the field's name.
CAM_FORMS = {"images": "count", "share_": "%0", "right_": "%0", "wrong_": "%0", "gc_": "r2", "r_": "r2"}


def pick_examples(predicted: dict, labels: torch.Tensor, n: int = 4, wrong_for: str = "avgpool") -> list[int]:
    """Test images to draw: the first ``n`` that every model gets right, then the first ``n`` that model
    ``wrong_for`` gets wrong, each group of ``n`` different classes (topped up in order if too few)."""
    all_right = torch.stack([p == labels for p in predicted.values()]).all(0)
    groups = [all_right, predicted[wrong_for] != labels]
    chosen: list[int] = []
    for mask in groups:
        seen, group = set(), []
        for i in mask.nonzero().flatten().tolist():
            if int(labels[i]) not in seen and i not in chosen:
                seen.add(int(labels[i]))
                group.append(i)
            if len(group) == n:
                break
        group += [i for i in range(len(labels)) if i not in chosen and i not in group][: n - len(group)]
        chosen += group
    return chosen
