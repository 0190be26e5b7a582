"""A spec means the same in the NumPy engine as in the torch engine, or is refused at load time.

Every spec field is listed below as honoured, refused (when not its default) or ignored (cannot
change what the NumPy engine computes); a field added to the spec without being classified here
fails `test_every_spec_field_is_classified`. Honoured fields are checked through the path the
CLI takes (load_spec -> numpy_runner.scratch_settings -> ScratchRun) against hand-derived values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddpcifar.engine.numpy_runner import scratch_settings
from ddpcifar.runs.report import Reporter
from ddpcifar.runs.rundir import NullRunDir
from ddpcifar.errors import UserError
from ddpcifar.schedule import lr_factor
from ddpcifar.scratch.augment import Augment, Draws, apply, augment, mean_fill
from ddpcifar.scratch.layers import SoftmaxCrossEntropy, log_softmax
from ddpcifar.scratch.optim import SGD
from ddpcifar.scratch.trainer import ScratchRun, Splits, make_data
from ddpcifar.spec import RunSpec, load_spec

# Runs on 8x8 inputs as well as on CIFAR's 32x32 (which the spec checks it against).
TINY = [
    {"type": "conv", "out": 4, "kernel": 3, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool", "size": 4},
    {"type": "flatten"},
    {"type": "linear", "out": 10},
]
BASE: dict[str, Any] = {
    "data": {"dir": "data/cifar10"},
    "model": {"name": "scratch_cnn"},
    "train": {"epochs": 2, "global_batch_size": 10},
    "scratch": {"architecture": TINY, "dtype": "float64"},
    "logging": {"run_name": "s", "progress": False, "tensorboard": False},
}


def write_spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(BASE))
    return path


def spec_of(tmp_path: Path, overrides: list[str] = ()) -> RunSpec:
    return load_spec(write_spec(tmp_path), overrides)


def run_of(tmp_path: Path, overrides: list[str], n: int = 40) -> tuple[ScratchRun, np.ndarray,
                                                                        np.ndarray]:
    """A ScratchRun on n random 8x8 images; returns it with the images and labels."""
    settings = scratch_settings(spec_of(tmp_path, overrides))
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (n, 8, 8, 3)).astype(np.uint8)
    y = rng.integers(0, 10, n)
    splits = Splits(x, y, x[:10], y[:10], (128.0,) * 3, (64.0,) * 3, num_classes=10)
    reporter = Reporter(NullRunDir(tmp_path / "run"), max_samples=0, sample_images=lambda i: x[i])
    return ScratchRun(settings, make_data(settings, splits), reporter), x, y


def params_copy(run: ScratchRun) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in run.net.params().items()}


# ---------------------------------------------------------------- refused

# field -> (--set overrides, the exact message after "invalid spec <path>: ")
REFUSED: dict[str, tuple[list[str], str]] = {
    "optimizer.name": (["optimizer.name=adamw"], "optimizer.name='adamw': the NumPy engine has "
                       "SGD with momentum only (allowed: 'sgd')"),
    "optimizer.units": (["optimizer.units=per1024"], "optimizer.units='per1024': the NumPy engine "
                        "takes lr and weight_decay in torch units (allowed: 'torch')"),
    "optimizer.weight_decay_mode": (["optimizer.weight_decay_mode=decoupled"],
                                    "optimizer.weight_decay_mode='decoupled': the NumPy engine "
                                    "adds L2 to the gradient (allowed: 'l2')"),
    "optimizer.norm_lr_scale": (["optimizer.norm_lr_scale=2"], "optimizer.norm_lr_scale=2.0: the "
                                "NumPy network has no normalisation layers (allowed: 1.0)"),
    "train.epochs": (["train.epochs=2.5"], "train.epochs=2.5: the NumPy engine trains whole "
                     "epochs (allowed: an integer)"),
    "train.amp": (["train.amp=bf16"], "train.amp='bf16': the NumPy engine computes in "
                  "scratch.dtype without autocast (allowed: 'auto', 'off')"),
    "train.loss_reduction": (["train.loss_reduction=sum"], "train.loss_reduction='sum': the NumPy "
                             "engine averages the loss over the batch (allowed: 'mean')"),
    "train.micro_batch_size": (["train.micro_batch_size=16"], "train.micro_batch_size=16: the "
                               "NumPy engine steps on whole batches (allowed: null)"),
    "train.averaging.kind": (["train.averaging.kind=ema"], "train.averaging.kind='ema': the NumPy "
                             "engine has no weight averaging (allowed: 'none')"),
    "model.compile": (["model.compile=true"], "model.compile=true: the NumPy engine has nothing "
                      "to compile (allowed: false)"),
    "model.channels_last": (["model.channels_last=false"], "model.channels_last=false: the NumPy "
                            "engine's arrays are always NHWC (allowed: true)"),
    "model.batchnorm": (["model.batchnorm.eps=0.001"], 'model.batchnorm={"momentum": null, '
                        '"eps": 0.001, "train_scale": true}: the NumPy network has no BatchNorm '
                        "(allowed: the defaults)"),
    "model.whitening": (['model.whitening={"eps": 0.01}'], 'model.whitening={"samples": 5000, '
                        '"eps": 0.01, "bias_epochs": 3.0, "bias_lr_scale": 1.0, "bias_decay": false}: the NumPy network '
                        "has no whitening stem (allowed: null)"),
    "data.loader": (["data.loader=ffcv"], "data.loader='ffcv': the NumPy engine reads both splits "
                    "into memory (allowed: 'memory')"),
    "augment.kind": (["augment.kind=albumentations"], "augment.kind='albumentations': the NumPy "
                     "engine supports 'none' and 'basic' (flip + translate + cutout)"),
    "augment.flip_mode": (["augment.flip_mode=alternating"], "augment.flip_mode='alternating': the "
                          "NumPy engine flips at random every epoch (allowed: 'random')"),
    "eval.tta": (["eval.tta=1"], "eval.tta=1: the NumPy engine has no test-time augmentation "
                 "(allowed: 0)"),
    "checkpoint.every_epochs": (["checkpoint.every_epochs=2"], "checkpoint.every_epochs=2: the "
                                "NumPy engine does not resume and writes no last.pt (allowed: 1)"),
    "checkpoint.every_steps": (["checkpoint.every_steps=10"], "checkpoint.every_steps=10: the NumPy "
                               "engine does not resume and writes no last.pt (allowed: null)"),
    "logging.resume": (["logging.resume=auto"], "logging.resume='auto': the NumPy engine does "
                       "not resume (allowed: 'explicit')"),
    "logging.sample_indices": (["logging.sample_indices=true"], "logging.sample_indices=true: the "
                               "NumPy engine keeps no per-step index log (allowed: false)"),
    "scratch.architecture": (['scratch.architecture=[{"type": "conv", "out": 8}]'],
                             "scratch.architecture[0].kernel: required for a conv layer"),
}


@pytest.mark.parametrize("field", sorted(REFUSED))
def test_refused_values_fail_at_load_time_naming_field_and_allowed(tmp_path, field):
    overrides, expected = REFUSED[field]
    path = write_spec(tmp_path)
    with pytest.raises(UserError) as info:
        load_spec(path, overrides)
    assert str(info.value) == f"invalid spec {path}: {expected}"


def test_refusals_are_for_non_defaults_only(tmp_path):
    """The defaults of refused fields load; fp16 (refused on CPU already) is refused with CUDA."""
    spec = spec_of(tmp_path, ["train.amp=off", "model.compile=false", "data.loader=memory"])
    assert spec.train.amp == "off"
    with pytest.raises(UserError, match=r"train\.amp='fp16': the NumPy engine computes in"):
        load_spec(write_spec(tmp_path), ["train.amp=fp16"], cuda=True)
    no_head = '[{"type": "conv", "out": 8, "kernel": 3}]'
    with pytest.raises(UserError, match=r"scratch\.architecture: must end in a linear layer"):
        spec_of(tmp_path, [f"scratch.architecture={no_head}"])


# ---------------------------------------------------------------- honoured: conversion

HONOURED_OVERRIDES = [
    "optimizer.lr=0.3", "optimizer.momentum=0.5", "optimizer.nesterov=true",
    "optimizer.weight_decay=0.01", "train.label_smoothing=0.1", "train.grad_clip=2.0",
    "train.seed=7", "train.log_every=3", "augment.kind=basic", "augment.flip_p=0.3",
    "augment.translate=3", "augment.translate_pad=reflect", "augment.cutout=5",
    "eval.batch_size=20", "eval.every=2", "eval.max_samples=4", "checkpoint.save_best=false",
    "scratch.blas_threads=1", "schedule.name=triangular",
]


def test_scratch_settings_copy_every_honoured_field(tmp_path):
    spec = spec_of(tmp_path, HONOURED_OVERRIDES)
    s = scratch_settings(spec)
    assert (s.lr, s.momentum, s.nesterov, s.weight_decay) == (0.3, 0.5, True, 0.01)
    assert (s.label_smoothing, s.grad_clip, s.seed, s.log_every) == (0.1, 2.0, 7, 3)
    assert s.augment == Augment(flip_p=0.3, translate=3, translate_pad="reflect", cutout=5)
    assert (s.eval_batch_size, s.eval_every, s.max_samples, s.save_best) == (20, 2, 4, False)
    assert (s.epochs, s.batch_size, s.blas_threads, s.dtype) == (2, 10, 1, "float64")
    assert s.schedule is spec.schedule and s.architecture == TINY
    off = scratch_settings(spec_of(tmp_path, ["augment.kind=none", "augment.cutout=5"]))
    assert off.augment.flip_p == 0 and off.augment.translate == 0 and off.augment.cutout == 0
    assert not off.augment.active


def test_every_onecycle_and_triangular_spec_now_loads(tmp_path):
    for name in ("onecycle", "triangular", "cosine", "step", "constant"):
        assert spec_of(tmp_path, [f"schedule.name={name}"]).schedule.name == name


# ---------------------------------------------------------------- honoured: optimizer

def test_nesterov_step_equals_the_hand_computed_update():
    """Two steps of w <- w - lr (g + m b), b <- m b + g, written out with numbers."""
    w = {"0.weight": np.array([1.0, -2.0])}
    opt = SGD(w, lr=0.1, momentum=0.5, nesterov=True)
    opt.step({"0.weight": np.array([2.0, 4.0])})
    # b = (2, 4); w = (1, -2) - 0.1 * ((2, 4) + 0.5 * (2, 4)) = (1 - 0.3, -2 - 0.6)
    np.testing.assert_allclose(w["0.weight"], [0.7, -2.6], rtol=1e-14)
    opt.lr = 0.2
    opt.step({"0.weight": np.array([-1.0, 0.0])})
    # b = 0.5 * (2, 4) + (-1, 0) = (0, 2); w -= 0.2 * ((-1, 0) + 0.5 * (0, 2)) = 0.2 * (-1, 1)
    np.testing.assert_allclose(w["0.weight"], [0.9, -2.8], rtol=1e-14)


@pytest.mark.parametrize("nesterov", [True, False])
def test_optimizer_nesterov_reaches_the_training_step(tmp_path, nesterov):
    run, x, y = run_of(tmp_path, ["schedule.name=constant", "optimizer.lr=0.05",
                                  "optimizer.momentum=0.9", f"optimizer.nesterov={json.dumps(nesterov)}",
                                  "optimizer.weight_decay=0"])
    w0 = params_copy(run)
    run.train_step(x[:10], y[:10])
    g1 = {k: v.copy() for k, v in run.net.grads().items()}
    w1 = params_copy(run)
    run.train_step(x[:10], y[:10])
    g2 = run.net.grads()
    for k in w0:
        b1 = g1[k]  # the buffer starts at the first gradient
        step1 = g1[k] + 0.9 * b1 if nesterov else b1
        np.testing.assert_allclose(w1[k], w0[k] - 0.05 * step1, rtol=1e-10, atol=1e-14)
        b2 = 0.9 * b1 + g2[k]
        step2 = g2[k] + 0.9 * b2 if nesterov else b2
        np.testing.assert_allclose(run.net.params()[k], w1[k] - 0.05 * step2, rtol=1e-10,
                                   atol=1e-14)


# ---------------------------------------------------------------- honoured: label smoothing

def test_label_smoothing_gives_the_closed_form_loss_and_gradient():
    """Two classes with p = (1/4, 3/4), true class 1, smoothing e: target (e/2, 1 - e/2)."""
    e = 0.2
    ce = SoftmaxCrossEntropy(label_smoothing=e)
    loss = ce.forward(np.array([[0.0, math.log(3.0)]]), np.array([1]))
    assert loss == pytest.approx(-(e / 2) * math.log(0.25) - (1 - e / 2) * math.log(0.75),
                                 rel=1e-12)
    np.testing.assert_allclose(ce.backward(), [[0.25 - 0.1, 0.75 - 0.9]], atol=1e-12)
    assert SoftmaxCrossEntropy().forward(np.array([[0.0, math.log(3.0)]]), np.array([1])) == \
        pytest.approx(math.log(4 / 3), rel=1e-12)


def test_train_label_smoothing_reaches_the_training_loss(tmp_path):
    run, x, y = run_of(tmp_path, ["train.label_smoothing=0.3", "schedule.name=constant"])
    logp = log_softmax(run.net.forward(run.normalize(x[:10]), train=False))
    expected = np.mean(0.7 * -logp[np.arange(10), y[:10]] + 0.3 * -logp.mean(axis=1))
    loss, _ = run.train_step(x[:10], y[:10])
    assert loss == pytest.approx(float(expected), rel=1e-10)
    assert abs(loss - float(np.mean(-logp[np.arange(10), y[:10]]))) > 1e-3


# ---------------------------------------------------------------- honoured: grad clip

def update_norm(tmp_path: Path, overrides: list[str]) -> tuple[float, np.ndarray]:
    run, x, y = run_of(tmp_path, ["schedule.name=constant", "optimizer.lr=0.1",
                                  "optimizer.momentum=0", "optimizer.nesterov=false",
                                  "optimizer.weight_decay=0", *overrides])
    w0 = params_copy(run)
    run.train_step(x[:10], y[:10])
    delta = np.concatenate([(run.net.params()[k] - w0[k]).ravel() for k in w0])
    return float(np.linalg.norm(delta)), delta


def test_grad_clip_bounds_the_update_norm(tmp_path):
    free, free_delta = update_norm(tmp_path, [])
    clipped, clipped_delta = update_norm(tmp_path, ["train.grad_clip=0.001"])
    assert free > 10 * 0.1 * 0.001  # so the clip below has work to do
    # plain SGD: the update is lr * g, and |g| is scaled down to 0.001 (torch's 1e-6 aside)
    assert clipped <= 0.1 * 0.001 and clipped == pytest.approx(0.1 * 0.001, rel=1e-4)
    np.testing.assert_allclose(clipped_delta, free_delta * (clipped / free), rtol=1e-8,
                               atol=1e-15)  # same direction
    loose, _ = update_norm(tmp_path, ["train.grad_clip=1000"])
    assert loose == pytest.approx(free, rel=1e-12)


# ---------------------------------------------------------------- honoured: schedule

@pytest.mark.parametrize("name", ["onecycle", "triangular", "cosine", "step", "constant"])
def test_lr_of_every_step_is_the_shared_schedule(tmp_path, name):
    overrides = [f"schedule.name={name}", "schedule.warmup_epochs=0.5", "schedule.start_factor=0.1",
                 "schedule.final_factor=0.05", "schedule.step_epochs=1", "schedule.gamma=0.5",
                 "optimizer.lr=0.2", "train.epochs=3"]
    run, x, y = run_of(tmp_path, overrides, n=45)  # 45 // 10 = 4 full batches, like the torch engine
    assert run.steps_per_epoch == 4 and run.total_steps == 12
    spec = spec_of(tmp_path, overrides)
    used = []
    for _ in range(12):
        run.train_step(x[:10], y[:10])
        used.append(run.opt.lr)
    assert used == pytest.approx([0.2 * lr_factor(i, 12, 4, spec.schedule) for i in range(12)],
                                 rel=1e-12)


def test_cosine_warmup_values_by_hand(tmp_path):
    """warmup 1 epoch (4 steps) from 0.2 of the peak, then cosine to 0.1 of it over 8 steps."""
    run, x, y = run_of(tmp_path, ["schedule.name=cosine", "schedule.warmup_epochs=1",
                                  "schedule.start_factor=0.2", "schedule.final_factor=0.1",
                                  "optimizer.lr=0.5", "train.epochs=3"])
    used = []
    for _ in range(12):
        run.train_step(x[:10], y[:10])
        used.append(run.opt.lr)
    by_hand = [0.5 * f for f in (0.2, 0.4, 0.6, 0.8)]
    by_hand += [0.5 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 8))) for k in range(8)]
    assert used == pytest.approx(by_hand, rel=1e-12)


# ---------------------------------------------------------------- honoured: augmentation

IMG = (np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1) + 1)  # 1..16, row by row


def draws(dy: int, dx: int, mirror: bool, corner: tuple[int, ...] = ()) -> Draws:
    return Draws(np.array([[dy, dx]]), np.array([mirror]), np.array([corner], dtype=np.int64))


@pytest.mark.parametrize("pad, dy, dx, mirror, expected", [
    # output (y, x) shows input (y + dy, x + dx): here one row down and one column left
    ("zero", 1, -1, False, [[0, 5, 6, 7], [0, 9, 10, 11], [0, 13, 14, 15], [0, 0, 0, 0]]),
    # reflect mirrors without repeating the edge: column -1 is column 1, row 4 is row 2
    ("reflect", 1, -1, False, [[6, 5, 6, 7], [10, 9, 10, 11], [14, 13, 14, 15], [10, 9, 10, 11]]),
    ("zero", 0, 0, True, [[4, 3, 2, 1], [8, 7, 6, 5], [12, 11, 10, 9], [16, 15, 14, 13]]),
    # mirrored and shifted: column W - 1 - (x + dx) = 2 - x
    ("zero", 0, 1, True, [[3, 2, 1, 0], [7, 6, 5, 0], [11, 10, 9, 0], [15, 14, 13, 0]]),
])
def test_flip_and_translate_pixels(pad, dy, dx, mirror, expected):
    cfg = Augment(flip_p=0.5, translate=1, translate_pad=pad, cutout=0)
    out = apply(IMG, draws(dy, dx, mirror), cfg, fill=(0,))
    np.testing.assert_array_equal(out[0, :, :, 0], expected)


def test_cutout_pixels():
    cfg = Augment(flip_p=0.0, translate=0, translate_pad="zero", cutout=2)
    out = apply(IMG, draws(0, 0, False, (1, 2)), cfg, fill=(99,))
    np.testing.assert_array_equal(out[0, :, :, 0], [[1, 2, 3, 4], [5, 6, 99, 99],
                                                    [9, 10, 99, 99], [13, 14, 15, 16]])
    assert (IMG[0, 1:3, 2:4, 0] == [[7, 8], [11, 12]]).all()  # the input is left alone


def reference(img: np.ndarray, dy: int, dx: int, mirror: bool, corner: tuple[int, int] | None,
              size: int, pad: str, fill: tuple[int, ...]) -> np.ndarray:
    """The documented semantics pixel by pixel (PixelTable.index in words)."""
    h, w, _ = img.shape
    out = np.zeros_like(img)

    def reflect(i: int, n: int) -> int:
        return (n - 1) - abs((n - 1) - abs(i))

    for y in range(h):
        for x in range(w):
            r, c = y + dy, x + dx
            c = w - 1 - c if mirror else c
            if pad == "reflect":
                out[y, x] = img[reflect(r, h), reflect(c, w)]
            elif 0 <= r < h and 0 <= c < w:
                out[y, x] = img[r, c]
            if corner is not None and corner[0] <= y < corner[0] + size \
                    and corner[1] <= x < corner[1] + size:
                out[y, x] = fill
    return out


@pytest.mark.parametrize("pad", ["zero", "reflect"])
def test_seeded_augment_draws_shift_then_flip_then_corner(pad):
    """With a seeded Generator: shifts (n, 2) in [-t, t], then flips (random < flip_p), then
    cutout corners (y0 then x0); each image matches the pixel-by-pixel reference."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 200, (6, 5, 7, 3)).astype(np.uint8)
    cfg = Augment(flip_p=0.5, translate=2, translate_pad=pad, cutout=3)
    out = augment(images, cfg, np.random.default_rng(11), fill=(250, 251, 252))
    mirror_rng = np.random.default_rng(11)
    shift = mirror_rng.integers(-2, 3, size=(6, 2))
    mirror = mirror_rng.random(6) < 0.5
    y0, x0 = mirror_rng.integers(0, 5 - 3 + 1, size=6), mirror_rng.integers(0, 7 - 3 + 1, size=6)
    for i in range(6):
        expected = reference(images[i], *shift[i], mirror[i], (y0[i], x0[i]), 3, pad,
                             (250, 251, 252))
        np.testing.assert_array_equal(out[i], expected)
    np.testing.assert_array_equal(out, augment(images, cfg, np.random.default_rng(11),
                                               fill=(250, 251, 252)))


def test_flip_p_and_translate_ranges_over_many_images():
    images = np.random.default_rng(0).integers(0, 200, (4000, 6, 6, 3)).astype(np.uint8)
    for p, lo, hi in ((0.0, 0, 0), (1.0, 4000, 4000), (0.25, 850, 1150)):
        out = augment(images, Augment(p, 0, "zero", 0), np.random.default_rng(1), fill=(0, 0, 0))
        mirrored = (out == images[:, :, ::-1]).all(axis=(1, 2, 3))
        assert ((out == images).all(axis=(1, 2, 3)) | mirrored).all()
        assert lo <= mirrored.sum() <= hi
    # translate=2: every shift in [-2, 2]^2 occurs, and nothing further
    out = augment(images[:500], Augment(0.0, 2, "zero", 0), np.random.default_rng(2), (0, 0, 0))
    padded = np.pad(images[:500], ((0, 0), (2, 2), (2, 2), (0, 0)))
    seen = set()
    for i in range(500):
        hits = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                if (padded[i, 2 + dy:8 + dy, 2 + dx:8 + dx] == out[i]).all()]
        assert hits
        seen.update(hits)
    assert seen == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}


def test_cutout_fill_is_the_rounded_dataset_mean(tmp_path):
    assert mean_fill((125.3, 122.5, 113.9)) == (125, 122, 114)  # Python rounds half to even
    assert mean_fill((-3.0, 300.0, 0.4)) == (0, 255, 0)
    run, _, _ = run_of(tmp_path, ["augment.cutout=4"])
    assert run.fill == (128, 128, 128)  # Splits mean in run_of


# ---------------------------------------------------------------- every field classified

HONOURED = {
    "version", "data.dir", "data.max_samples", "model.name", "optimizer.lr", "optimizer.momentum",
    "optimizer.nesterov", "optimizer.weight_decay", "augment.flip_p", "augment.translate",
    "augment.translate_pad", "augment.cutout", "train.global_batch_size", "train.seed",
    "train.label_smoothing", "train.grad_clip", "train.log_every", "eval.batch_size",
    "eval.every", "eval.max_samples", "checkpoint.save_best", "logging.runs_dir",
    "logging.run_name", "logging.tensorboard", "logging.progress", "data.val_size", "data.val_seed",
    "scratch.dtype", "scratch.blas_threads",
    # also in REFUSED for the values it cannot honour:
    "augment.kind", "train.epochs", "train.amp", "scratch.architecture",
}
IGNORED = {
    "data.num_workers", "data.os_cache", "train.deterministic", "optimizer.betas", "optimizer.eps",
    "optimizer.muon_lr", "optimizer.muon_momentum", "optimizer.muon_normalize", "optimizer.muon_ns_steps",
    "augment.affine_p", "augment.shift", "augment.scale", "augment.rotate", "augment.dropout_p",
    "augment.dropout_size", "eval.tta_every_eval", "distributed.timeout_s",
    "eval.tta_threshold",  # only with eval.tta, which is refused
    # only read when train.averaging.kind is not 'none', which is refused:
    "train.averaging.every", "train.averaging.decay", "train.averaging.power", "train.averaging.start_epochs",
}


def leaf_fields(data: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in ("model.batchnorm",):
            out |= leaf_fields(value, path + ".")
        else:
            out.add(path)
    return out


def test_every_spec_field_is_classified(tmp_path):
    """schedule.* goes whole to ddpcifar.schedule.lr_factor, so all its fields are honoured."""
    fields = {f for f in leaf_fields(spec_of(tmp_path).resolved()) if not f.startswith("schedule.")}
    known = HONOURED | IGNORED | set(REFUSED)
    assert fields - known == set(), "classify the new spec fields for the NumPy engine"
    assert known - fields == set(), "fields listed here are no longer in the spec"


# ---------------------------------------------------------------- honoured: data order, eval, checkpoints

def test_data_order_is_the_torch_engines_for_one_process():
    from ddpcifar.data.orders import train_order as torch_engine_order
    from ddpcifar.scratch.trainer import train_order

    for epoch in (0, 3):
        np.testing.assert_array_equal(
            train_order(103, seed=5, epoch=epoch, batch_size=10),
            torch_engine_order(103, seed=5, epoch=epoch, rank=0, world_size=1, batch_size=10))
    assert len(train_order(103, seed=5, epoch=0, batch_size=10)) == 100  # full batches only


def test_eval_every_and_save_best_reach_the_run_directory(tmp_path):
    from ddpcifar.runs.rundir import RunDir
    from ddpcifar.scratch.trainer import train_scratch

    settings = scratch_settings(spec_of(tmp_path, ["train.epochs=3", "eval.every=2",
                                                   "checkpoint.save_best=false"]))
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (20, 8, 8, 3)).astype(np.uint8)
    y = rng.integers(0, 10, 20)
    run = tmp_path / "run"
    summary = train_scratch(settings, Splits(x, y, x, y, (128.0,) * 3, (64.0,) * 3, 10),
                            RunDir(run, name="run", model="scratch_cnn", engine="numpy", epochs=3,
                                   world_size=1, classes=[str(i) for i in range(10)]),
                            progress=False)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines if m["kind"] == "eval"] == [2, 3]  # every 2nd and the last
    assert not (run / "checkpoints" / "scratch_best.npz").exists()
    assert summary["best"]["checkpoint"] is None
    assert (run / "checkpoints" / "scratch_final.npz").is_file()
