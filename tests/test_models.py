import math

import pytest
import torch
import torch.nn.functional as F

import helpers as H


@pytest.mark.parametrize("name,head,count,outputs", [
    ("fc", "linear", 2_190_122, 10),
    ("avgpool", "linear", 1_132_842, 10),
    ("avgpool_dropout", "linear", 1_132_842, 10),
    ("avgpool", "author", 1_130_272, 256),
    ("avgpool_dropout", "author", 1_130_272, 256),
])
def test_shapes_and_parameter_counts(name, head, count, outputs):
    model = H.build_model(name, head)
    assert H.count_parameters(model) == count
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, outputs)


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="model must be one of fc, avgpool, avgpool_dropout, compact; got 'resnet'"):
        H.build_model("resnet")
    with pytest.raises(ValueError, match="head must be one of linear, author"):
        H.Network("avgpool", "softmax")
    with pytest.raises(ValueError, match="only applies to the average-pooling"):
        H.build_model("fc", head="author")


def test_layer_table_adds_up():
    model = H.build_model("fc")
    table = H.layer_table(model)
    assert table["parameters"].sum() == H.count_parameters(model)
    assert table.iloc[-1]["output"] == "10"
    # SPEC.md: about 107 MFLOP forward per image
    assert 100 < table["MFLOPs"].sum() < 115
    pools = table[table["type"] == "MaxPool2d"]
    assert pools["output"].tolist() == ["32x16x16", "128x8x8", "128x4x4", "256x2x2"]


@pytest.mark.parametrize("name", list(H.VARIANTS))
def test_initial_loss_is_near_ln10(name, fake_data):
    torch.manual_seed(0)
    model = H.build_model(name).eval()
    x = H.normalize(fake_data.train.images[:256])
    with torch.no_grad():
        loss = F.cross_entropy(model(x), fake_data.train.labels[:256]).item()
    assert abs(loss - math.log(10)) < 0.15


def test_a_model_overfits_one_batch(fake_data):
    torch.manual_seed(0)
    model = H.build_model("avgpool")
    x, y = H.normalize(fake_data.train.images[:32]), fake_data.train.labels[:32]
    losses = H.overfit_one_batch(model, x, y, steps=150)
    assert losses[0] > 2.0 and losses[-1] < 0.05
    assert (model(x).argmax(1) == y).all()


def test_dropout_keeps_half_and_rescales():
    from helpers.models import Dropout
    drop = Dropout(0.5)
    x = torch.ones(100_000)
    out = drop(x)
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert 0.48 < (out > 0).float().mean().item() < 0.52
    assert torch.equal(drop.eval()(x), x)


def test_batchnorm_and_width_options():
    bn = H.build_model("avgpool_dropout", batchnorm=True)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules()) == 7
    assert all(m.bias is None for m in bn.modules() if isinstance(m, torch.nn.Conv2d))
    half = H.build_model("avgpool", width=0.5)
    assert half(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert H.count_parameters(half) < H.count_parameters(H.build_model("avgpool")) / 3
    assert H.build_model("fc", width=0.5)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="needs width=1.0"):
        H.build_model("avgpool", head="author", width=0.5)


def test_design_checks_hold_for_the_report_and_catch_a_violation():
    assert H.architecture.design_checks(H.build_model("fc"))["holds"].all()
    model = H.build_model("avgpool")
    model.conv3 = torch.nn.Conv2d(32, 64, 3, padding=0)    # shrinks the maps: padding no longer keeps the size
    model.conv4 = torch.nn.Conv2d(64, 128, 3, padding=2)
    assert not H.architecture.design_checks(model)["holds"].iloc[0]


def test_fewer_convolutions_and_the_compact_network():
    shallow = H.build_model("avgpool_dropout", convs=5)
    assert [n for n, m in shallow.named_children() if isinstance(m, torch.nn.Conv2d)] == [f"conv{i}" for i in range(1, 6)]
    assert shallow(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    # conv6 and conv7 hold 78% of model 3's parameters
    assert H.count_parameters(shallow) == 1_132_842 - (128 * 256 * 9 + 256) - (256 * 256 * 9 + 256) - 256 * 10 + 128 * 10
    assert H.build_model("avgpool", convs=6)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    compact = H.build_model("compact")
    assert compact(torch.zeros(2, 3, 32, 32)).shape == (2, 10) and H.count_parameters(compact) == 1_972_826
    assert 2 < H.architecture.forward_flops(compact) / H.architecture.forward_flops(H.build_model("avgpool_dropout")) < 2.5
    assert H.count_parameters(H.build_model("compact", width=0.5)) < H.count_parameters(compact) / 3
    for bad, match in [(dict(name="fc", convs=5), "average-pooling"), (dict(name="avgpool", convs=4), "5, 6 or 7"),
                       (dict(name="compact", head="author"), "only the width")]:
        with pytest.raises(ValueError, match=match):
            H.build_model(**bad)


def test_whitened_stem_decorrelates_patches(fake_data):
    torch.manual_seed(0)
    model = H.build_model("compact")
    x = H.normalize(fake_data.train.images[:200])
    H.models.whiten_stem(model, x, eps=0.0)
    out = model.conv0(x).permute(0, 2, 3, 1).reshape(-1, 24)[:, :12]   # the first sign of each filter pair
    cov = out.T @ out / len(out)
    assert torch.allclose(cov, torch.eye(12), atol=0.05)
    assert not model.conv0.weight.requires_grad
    assert H.count_parameters(model) == 1_972_826 - 24 * 3 * 2 * 2
    with pytest.raises(ValueError, match="whiten applies to the compact network only"):
        H.TrainConfig(model="avgpool", whiten=True)


def test_airbench_details_of_the_compact_network():
    plain, tuned = H.build_model("compact", width=0.25), H.build_model(
        "compact", width=0.25, dirac=True, bn_scale=False, bn_momentum=0.6, logit_scale=1 / 9)
    conv = tuned.conv1b                     # 16 -> 16 channels: exactly the identity at the start
    x = torch.randn(2, conv.in_channels, 8, 8)
    assert torch.allclose(conv(x), x)
    wide = tuned.conv2a                     # 16 -> 64: its first 16 filters pass their channel through
    y = torch.randn(1, 16, 8, 8)
    assert torch.allclose(wide(y)[:, :16], y) and not torch.allclose(plain.conv1b(x), x)
    bn = [m for m in tuned.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.6 and not m.weight.requires_grad for m in bn)
    assert H.count_parameters(tuned) == H.count_parameters(plain) - sum(m.weight.numel() for m in bn)
    tuned.eval(), plain.eval()
    plain.load_state_dict(tuned.state_dict())
    z = torch.randn(3, 3, 32, 32)
    assert torch.allclose(tuned(z), plain(z) / 9, atol=1e-6)
    with pytest.raises(ValueError, match="compact network only"):
        H.build_model("avgpool", dirac=True)


def test_the_largest_setback_of_a_falling_curve():
    worst = H.sanity.largest_setback([2.0, 1.0, 0.1, 0.5, 0.05, 0.4, 0.01])
    assert worst["low_step"] == 5 and worst["high_step"] == 6 and worst["ratio"] == pytest.approx(8.0)
    assert H.sanity.largest_setback([3.0, 2.0, 1.0])["ratio"] == 1.0
