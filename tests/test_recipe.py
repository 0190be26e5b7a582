"""The speedrun recipe's parts: whitening, BatchNorm options, Muon, weight averaging, alternating
flip, test-time augmentation, fractional epochs, and the specs that refuse what a loader cannot do."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddpcifar.engine.evaluation import evaluate, tta_logits
from ddpcifar.engine.optim import ConvMuon, ParamRoles, TrainOptimizer
from ddpcifar.engine.wrap import configure_batchnorm
from ddpcifar.errors import UserError
from ddpcifar.models import build_model
from ddpcifar.models.whitening import init_whitening, patch_matrix, stem_of, whitening_filters
from ddpcifar.spec import BatchNormConfig, OptimizerConfig, ScheduleConfig, load_spec
from ddpcifar.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]


def correlated_images(n: int = 64, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Images whose neighbouring pixels and channels are correlated, like natural images."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 3, size, size, generator=g)
    return base + 0.6 * base.roll(1, dims=-1) + 0.4 * base.roll(1, dims=-2) + 0.5 * base[:, [1, 2, 0]]


def test_whitening_gives_identity_covariance_on_the_patches():
    images, eps = correlated_images(), 1e-3
    filters = whitening_filters(images, kernel=2, eps=eps)
    assert filters.shape == (24, 3, 2, 2)
    torch.testing.assert_close(filters[12:], -filters[:12])  # both signs of every direction
    out = F.conv2d(images, filters[:12])  # the first half of the channels
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = flat.T @ flat / len(flat)
    patches = patch_matrix(images, 2).double()
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / len(patches)).flip(0)
    # Identity up to eps: direction i has variance lambda_i / (lambda_i + eps), no cross terms.
    torch.testing.assert_close(cov, torch.diag(eigenvalues / (eigenvalues + eps)), atol=2e-4, rtol=0)
    assert (cov.diagonal() > 0.9).all() and not torch.allclose(cov, torch.eye(12, dtype=cov.dtype), atol=1e-6)


def test_init_whitening_freezes_the_stem_weight_and_zeroes_its_bias():
    model = build_model("airbench").to(memory_format=torch.channels_last)
    stem = init_whitening(model, correlated_images(size=32), eps=5e-4)
    assert stem is model.stem and not stem.weight.requires_grad and stem.bias.requires_grad
    assert stem.bias.abs().max() == 0 and stem.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="EraS9 has no whitening stem|has no whitening stem"):
        stem_of(build_model("era_s9"))


def test_batchnorm_options_apply_to_every_batchnorm():
    model = build_model("airbench")
    configure_batchnorm(model, BatchNormConfig(momentum=0.4, eps=1e-12, train_scale=False))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 6
    assert all(m.momentum == 0.4 and m.eps == 1e-12 and not m.weight.requires_grad
               and bool((m.weight == 1).all()) and m.bias.requires_grad for m in norms)


def test_whitening_bias_trains_for_its_epochs_then_freezes():
    model = build_model("airbench")
    stem = init_whitening(model, correlated_images(size=32), eps=5e-4)
    schedule = ScheduleConfig(name="triangular", start_factor=1.0, peak_epoch=0, final_factor=0.0)
    opt = TrainOptimizer(model, OptimizerConfig(lr=0.1), schedule, steps_per_epoch=10,
                         total_steps=80, global_batch=100, loss_reduction="mean",
                         roles=ParamRoles(whitening_bias=stem.bias), whitening_bias_lr_scale=2.0,
                         whitening_bias_steps=30)
    bias_group = next(g for g in opt.param_groups if g["params"] == [stem.bias])
    lrs = []
    for step in (0, 29, 30, 79):
        opt.set_step(step)
        lrs.append(bias_group["lr"])
    assert lrs == pytest.approx([0.2, 0.2 * (1 - 29 / 80), 0.0, 0.0])
    decaying = TrainOptimizer(model, OptimizerConfig(lr=0.1), schedule, steps_per_epoch=10,
                              total_steps=80, global_batch=100, loss_reduction="mean",
                              roles=ParamRoles(whitening_bias=stem.bias), whitening_bias_steps=30,
                              whitening_bias_decay=True)
    group = next(g for g in decaying.param_groups if g["params"] == [stem.bias])
    decaying.set_step(15)
    assert group["lr"] == pytest.approx(0.1 * (1 - 15 / 30))


def test_muon_on_channels_last_filters_matches_the_plain_layout():
    torch.manual_seed(0)
    weights = torch.randn(16, 8, 3, 3)
    grads = [torch.randn(16, 8, 3, 3) for _ in range(3)]
    results = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        p = nn.Parameter(weights.clone().contiguous(memory_format=memory_format))
        muon = ConvMuon([p], lr=0.1, momentum=0.6, nesterov=True, normalize=True, ns_steps=5)
        for g in grads:
            p.grad = g.clone().contiguous(memory_format=memory_format)
            muon.prepare()
            muon.optimizer.step()
        results.append(p.detach().clone())
    # Reference: torch.optim.Muon on the (out, in*k*k) matrix, with the same normalisation.
    ref = nn.Parameter(weights.clone().view(16, -1))
    opt = torch.optim.Muon([ref], lr=0.1, momentum=0.6, nesterov=True, weight_decay=0.0)
    for g in grads:
        with torch.no_grad():
            ref.mul_(4.0 / ref.norm())
        ref.grad = g.view(16, -1).clone()
        opt.step()
    assert not torch.allclose(results[0], weights), "the step must change the filters"
    torch.testing.assert_close(results[0], ref.detach().view(16, 8, 3, 3))
    # Columns in another order: the same update up to bf16 rounding inside Newton-Schulz.
    torch.testing.assert_close(results[1], results[0], atol=2e-2, rtol=0)


def test_muon_steps_use_each_steps_own_gradient():
    # Through TrainOptimizer with real backward passes: the filters are not torch.optim.Muon's
    # own parameters, so its zero_grad alone would let their gradients pile up across steps.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 2))
    reference = [p.detach().clone() for p in net.parameters()]
    batches = [(torch.randn(4, 3, 6, 6), torch.randint(0, 2, (4,))) for _ in range(3)]
    schedule = ScheduleConfig(name="triangular", start_factor=1.0, peak_epoch=0, final_factor=1.0)
    cfg = OptimizerConfig(name="muon", lr=0.01, momentum=0.5, weight_decay=0.0, muon_lr=0.1,
                          muon_momentum=0.6, muon_ns_steps=5)
    opt = TrainOptimizer(net, cfg, schedule, steps_per_epoch=3, total_steps=3, global_batch=4,
                         loss_reduction="mean")
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step(scaler)
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())

    # Reference: each step's gradient taken afresh with autograd.grad, then the same updates.
    conv_w, lin_w, lin_b = (nn.Parameter(t) for t in reference)
    muon = torch.optim.Muon([conv_w_2d := nn.Parameter(conv_w.detach().view(8, -1))], lr=0.1,
                            momentum=0.6, nesterov=True, weight_decay=0.0, ns_steps=5)
    sgd = torch.optim.SGD([lin_w, lin_b], lr=0.01, momentum=0.5, nesterov=True)
    for x, y in batches:
        logits = F.linear(F.conv2d(x, conv_w_2d.view(8, 3, 3, 3)).flatten(1), lin_w, lin_b)
        g_conv, lin_w.grad, lin_b.grad = torch.autograd.grad(F.cross_entropy(logits, y),
                                                              [conv_w_2d, lin_w, lin_b])
        with torch.no_grad():  # as airbench94_muon: normalised after the gradient, before the step
            conv_w_2d.mul_(math.sqrt(8) / conv_w_2d.norm())
        conv_w_2d.grad = g_conv
        muon.step()
        sgd.step()
    torch.testing.assert_close(net[0].weight.detach(), conv_w_2d.detach().view(8, 3, 3, 3))
    torch.testing.assert_close(net[2].weight.detach(), lin_w.detach())


def test_tta_is_the_identity_on_flip_and_shift_invariant_images():
    torch.manual_seed(0)
    model = build_model("airbench").to(memory_format=torch.channels_last).eval()
    colours = torch.randn(8, 3)
    flat = colours[:, :, None, None].expand(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        plain = model(flat)
        for level in (1, 2):
            torch.testing.assert_close(tta_logits(model, flat, level, plain), plain)
        busy = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        plain_busy = model(busy)
        assert not torch.allclose(tta_logits(model, busy, 2, plain_busy), plain_busy, atol=1e-4)


def test_evaluate_reports_top1_tta_beside_top1():
    from ddpcifar.data.batch import Batch

    torch.manual_seed(1)
    model = build_model("airbench").to(memory_format=torch.channels_last)
    colours = torch.randn(20, 3)
    images = colours[:, :, None, None].expand(20, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(20) % 10
    batches = [Batch(images[:10], labels[:10], torch.arange(10)),
               Batch(images[10:], labels[10:], torch.arange(10, 20))]
    result = evaluate(model, batches, num_classes=10, amp_dtype=None, device=torch.device("cpu"), tta=2)
    assert result.top1_tta == result.top1 and result.metrics()["tta"] == 2
    assert "top1_tta" not in evaluate(model, batches, num_classes=10, amp_dtype=None,
                                      device=torch.device("cpu")).metrics()


def test_alternating_flip_mirrors_every_image_on_odd_epochs(prepared_data):
    from ddpcifar.data.config import AugmentConfig, DataConfig
    from ddpcifar.data.loaders import build_loader

    augment = AugmentConfig(kind="basic", flip_p=0.5, flip_mode="alternating", translate=0)
    loader = build_loader(DataConfig(dir=prepared_data.data_dir, loader="memory", num_workers=0),
                          augment, split="train", batch_size=100, train=True, rank=0, world_size=1,
                          seed=3, device=torch.device("cpu"), mean=(0.0,) * 3, std=(1.0,) * 3)
    seen = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        by_index = {}
        for batch in loader:
            for i, image in zip(batch.index.tolist(), batch.images):
                by_index[i] = image
        seen.append(by_index)
    raw = torch.from_numpy(prepared_data.train.images.copy()).permute(0, 3, 1, 2).float()
    flipped = [bool(torch.equal(seen[0][i], raw[i].flip(-1))) for i in sorted(seen[0])]
    assert 0.3 < sum(flipped) / len(flipped) < 0.7, "about half start mirrored"
    for i in seen[0]:
        torch.testing.assert_close(seen[1][i], seen[0][i].flip(-1), rtol=0, atol=0)
        torch.testing.assert_close(seen[2][i], seen[0][i], rtol=0, atol=0)


def write_spec(tmp_path: Path, **sections) -> Path:
    spec = {"data": {"dir": "data/x", "loader": "memory"}, "model": {"name": "airbench"},
            "train": {"epochs": 1}, "logging": {"run_name": "r"}}
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize("sections, message", [
    ({"data": {"loader": "ffcv"}, "augment": {"flip_mode": "alternating"}},
     "augment.flip_mode='alternating' needs data.loader='memory': FFCV's RandomHorizontalFlip "
     "draws a new flip every epoch; use flip_mode='random'"),
    ({"model": {"name": "era_s9", "whitening": {}}},
     "model.whitening: model 'era_s9' has no whitening stem (allowed models: airbench)"),
    ({"optimizer": {"name": "adamw", "units": "per1024"}},
     "adamw takes lr and weight_decay in torch units with its own decoupled decay"),
])
def test_spec_refuses_what_cannot_be_done(tmp_path, sections, message):
    with pytest.raises(UserError) as err:
        load_spec(write_spec(tmp_path, **sections))
    text = str(err.value)
    assert "\n" not in text and message in text


def _tiny_args(prepared_data, runs: Path, name: str, *extra: str) -> list[str]:
    return [str(ROOT / "specs" / "airbench94.json"),
            "--set", f"data.dir={prepared_data.data_dir}", "--set", f"logging.runs_dir={runs}",
            "--set", f"logging.run_name={name}", "--set", "logging.progress=false",
            "--set", "logging.tensorboard=false", "--set", "data.max_samples=400",
            "--set", "train.global_batch_size=100", "--set", "eval.batch_size=100",
            "--set", "model.whitening.samples=200", "--set", "train.log_every=2",
            "--set", "eval.tta=1", *extra]


def test_fractional_epochs_stop_inside_the_last_epoch(tmp_path, prepared_data):
    assert train_main(_tiny_args(prepared_data, tmp_path, "f", "--set", "train.epochs=1.5",
                                 "--set", "train.averaging.start_epochs=0")) == 0
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["epochs"] == 1.5  # ceil(4 steps/epoch x 1.5)
    assert json.loads((tmp_path / "f" / "status.json").read_text())["epochs"] == 2
    assert set(summary["timing"]) == {"whitening_s", "train_s", "final_eval_s", "time_to_accuracy_s"}
    assert 0 <= summary["final"]["top1_tta"] <= 1 and summary["final"]["tta"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lookahead", "ema"])
def test_weight_averaging_resumes_bitwise(tmp_path, prepared_data, kind):
    from ddpcifar.engine.checkpoint import load_checkpoint

    args = _tiny_args(prepared_data, tmp_path, kind, "--set", "train.epochs=3",
                      "--set", f"train.averaging.kind={kind}", "--set", "train.averaging.every=2",
                      "--set", "train.averaging.start_epochs=1", "--set", "train.averaging.decay=0.8")
    assert train_main(args) == 0
    run = tmp_path / kind
    done = load_checkpoint(run / "checkpoints" / "last.pt")
    assert done["averaging"]["kind"] == kind and done["averaging"]["started"]
    # Back to the epoch-2 checkpoint, as if the last one had been lost, and resume from it.
    for suffix in ("", ".sha256"):
        os.replace(run / "checkpoints" / f"prev.pt{suffix}", run / "checkpoints" / f"last.pt{suffix}")
    shutil.copy(run / "summary.json", tmp_path / "summary.first")
    assert train_main([*args, "--resume"]) == 0
    again = load_checkpoint(run / "checkpoints" / "last.pt")
    for key, value in done["state_dict"].items():
        assert torch.equal(again["state_dict"][key], value), key
    for key, value in done["averaging"]["average"].items():
        assert torch.equal(again["averaging"]["average"][key], value), key
    first = json.loads((tmp_path / "summary.first").read_text())["final"]
    assert json.loads((run / "summary.json").read_text())["final"]["top1_tta"] == first["top1_tta"]
