"""Learning-rate schedules, optimizer grouping, checkpoint integrity, sample selection (unit level)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ddpcifar.engine.checkpoint import (load_checkpoint, load_latest, rotate_and_save,
                                        save_checkpoint)
from ddpcifar.engine.optim import TrainOptimizer
from ddpcifar.schedule import lr_factor
from ddpcifar.errors import UserError
from ddpcifar.spec import OptimizerConfig, ScheduleConfig

SPE, EPOCHS = 10, 10
TOTAL = SPE * EPOCHS


def curve(**cfg) -> list[float]:
    c = ScheduleConfig(**cfg)
    return [lr_factor(s, TOTAL, SPE, c) for s in range(TOTAL)]


def test_warmup_is_linear_from_start_factor():
    f = curve(name="cosine", warmup_epochs=1, start_factor=0.1)
    assert f[0] == pytest.approx(0.1)
    assert f[5] == pytest.approx(0.1 + 0.9 * 5 / 10)
    assert f[10] == pytest.approx(1.0)  # warmup done: the cosine starts at the peak


def test_cosine_decays_monotonically_to_final_factor():
    f = curve(name="cosine", final_factor=0.01)
    assert f[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f, f[1:]))
    assert f[-1] == pytest.approx(0.01, abs=2e-3)


@pytest.mark.parametrize("name", ["onecycle", "triangular"])
def test_one_peak_shapes(name):
    f = curve(name=name, peak_epoch=0.3, start_factor=0.1, final_factor=0.0)
    peak = max(range(TOTAL), key=f.__getitem__)
    assert peak == 30 and f[peak] == pytest.approx(1.0)
    assert f[0] == pytest.approx(0.1)
    assert all(a <= b for a, b in zip(f[:peak], f[1:peak + 1]))
    assert all(a >= b for a, b in zip(f[peak:], f[peak + 1:]))
    assert f[-1] < 0.05


def test_triangular_is_linear_and_onecycle_is_not():
    tri, one = curve(name="triangular", peak_epoch=0.5), curve(name="onecycle", peak_epoch=0.5)
    assert tri[25] == pytest.approx(0.5)  # halfway up a straight line
    assert one[25] == pytest.approx(0.5 * (1 - math.cos(math.pi / 2)))
    assert one[10] < tri[10]  # the cosine ramp starts slower


def test_peak_epoch_above_one_is_an_epoch_number():
    f = curve(name="triangular", peak_epoch=2)
    assert max(range(TOTAL), key=f.__getitem__) == 2 * SPE


def test_step_schedule():
    f = curve(name="step", step_epochs=3, gamma=0.5)
    assert f[0] == f[29] == 1.0 and f[30] == 0.5 and f[60] == 0.25 and f[99] == 0.125


def _opt(model: nn.Module, schedule: ScheduleConfig | None = None, *, total: int = TOTAL,
         batch: int = 1024, reduction: str = "mean", **cfg) -> TrainOptimizer:
    return TrainOptimizer(model, OptimizerConfig(**cfg), schedule or ScheduleConfig(name="constant"),
                          steps_per_epoch=SPE, total_steps=total, global_batch=batch,
                          loss_reduction=reduction)


def test_schedule_drives_every_group():
    model = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))
    opt = _opt(model, ScheduleConfig(name="cosine"), lr=0.2, norm_lr_scale=4.0)
    lrs = []
    for step in range(TOTAL):
        opt.set_step(step)
        lrs.append([g["lr"] for g in opt.param_groups])
    assert lrs[0] == pytest.approx([0.2, 0.8, 0.2])  # weights, norm (x4), the linear bias
    assert all(g < 0.001 for g in lrs[-1])
    assert [r[1] / r[0] for r in lrs[1:50]] == pytest.approx([4.0] * 49)


def test_weight_decay_skips_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = _opt(model, name="adamw", weight_decay=0.05, lr=1e-3)
    decayed, norm, bias = opt.param_groups
    assert decayed["weight_decay"] == 0.05 and norm["weight_decay"] == bias["weight_decay"] == 0.0
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3, 3, 3])]
    assert len(norm["params"]) == 2 and len(bias["params"]) == 1  # bn weight and bias; conv bias
    assert isinstance(opt.main, torch.optim.AdamW)
    sgd = _opt(model, nesterov=True, momentum=0.9)
    assert sgd.main.defaults["nesterov"] is True and sgd.main.defaults["momentum"] == 0.9


def test_per1024_units_and_decoupled_decay():
    momentum, batch = 0.85, 2048
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    # Heavy-ball momentum: the first step is plain lr * gradient (Nesterov's would be (1 + m) x).
    opt = _opt(model, lr=11.5, units="per1024", weight_decay=0.0153, weight_decay_mode="decoupled",
               momentum=momentum, nesterov=False, norm_lr_scale=64.0, batch=batch, reduction="sum")
    torch_lr = 11.5 / (1024 * (1 + 1 / (1 - momentum)))
    weights, norm, bias = opt.param_groups
    assert weights["lr"] == pytest.approx(torch_lr) and norm["lr"] == pytest.approx(64 * torch_lr)
    # One step with zero gradients: every parameter shrinks by the same decay, whatever its lr.
    decay = 0.0153 * batch / (1024 * (1 + 1 / (1 - momentum)))
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step(torch.amp.GradScaler("cpu", enabled=False))
    for b, p in zip(before, model.parameters()):
        assert torch.allclose(p, b * (1 - decay), rtol=1e-6, atol=1e-7)
    # A mean loss has 1/batch of the summed gradient: its lr is batch times larger.
    mean = _opt(model, lr=11.5, units="per1024", weight_decay_mode="decoupled", momentum=momentum,
                batch=batch, reduction="mean")
    assert mean.param_groups[0]["lr"] == pytest.approx(torch_lr * batch)


def payload(value: float) -> dict:
    return {"state_dict": {"w": torch.full((3,), value)}, "epoch": int(value)}


def test_checkpoint_round_trip_and_sidecar(tmp_path):
    path = tmp_path / "c.pt"
    digest = save_checkpoint(path, payload(1.0))
    assert (tmp_path / "c.pt.sha256").read_text().split()[0] == digest
    got = load_checkpoint(path)
    assert got["epoch"] == 1 and torch.equal(got["state_dict"]["w"], torch.ones(3))
    assert not list(tmp_path.glob(".*tmp")), "no temporary files left behind"


def test_flipped_byte_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, payload(1.0))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"is corrupt or incomplete: sha256 .* does not match c\.pt\.sha256"):
        load_checkpoint(path)


def test_rotation_keeps_previous_and_latest_falls_back(tmp_path):
    rotate_and_save(tmp_path, "last", payload(1.0))
    rotate_and_save(tmp_path, "last", payload(2.0))
    assert load_checkpoint(tmp_path / "prev.pt")["epoch"] == 1
    state, path = load_latest(tmp_path)
    assert (state["epoch"], path.name) == (2, "last.pt")
    # A write cut short: the newest file is truncated; the previous one is used instead.
    (tmp_path / "last.pt").write_bytes((tmp_path / "last.pt").read_bytes()[:100])
    state, path = load_latest(tmp_path)
    assert (state["epoch"], path.name) == (1, "prev.pt")
    (tmp_path / "prev.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match=r"^cannot resume from .*: checkpoint .*last\.pt is corrupt"):
        load_latest(tmp_path)


def test_foreign_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "f.pt"
    torch.save({"hello": torch.zeros(1)}, path)
    with pytest.raises(UserError, match=r"is not a ddpcifar checkpoint"):
        load_checkpoint(path, verify=False)
    with pytest.raises(UserError, match=r"has no f\.pt\.sha256; refusing to load"):
        load_checkpoint(path)


def test_saved_samples_cover_every_class_in_index_order():
    from ddpcifar.runs.rundir import spread_by_class

    # A class-ordered split: class 0's mistakes come first by index.
    true = [i // 10 for i in range(30)]
    assert spread_by_class(true, 6) == [0, 1, 10, 11, 20, 21]
    assert spread_by_class(true, 100) == list(range(30))
    assert spread_by_class(true, 0) == []
    assert spread_by_class([2, 2, 0, 1, 2], 3) == [0, 2, 3]  # one of each class first
