"""`python -m ddpcifar.export`: every model in every format, parity, exports.json, bad input.

Random-weight checkpoints of every built-in model go through every format with a small
`--parity-images`; each exported file is then run again here, in its own runtime, on a batch
size the parity check did not use. One tiny real training run (shared with test_predict.py
through `trained_run`) gives trained weights and a real run directory. Bad input is one line on
stderr, exit status 2, and no file left behind (temporary ones included).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

from ddpcifar.engine.checkpoint import save_checkpoint
from ddpcifar.export import main as export_main
from ddpcifar.inference.checkpoints import load_torch_classifier, load_torch_state
from ddpcifar.inference.formats import FORMATS, REFUSED, load_runtime
from ddpcifar.inference.parity import MAX_ABS_DIFF
from ddpcifar.models import MODEL_NAMES, build_model

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
NORMALIZATION = {"mean": [125.3, 123.0, 113.9], "std": [63.0, 62.1, 66.7]}


# ------------------------------------------------------------------ shared with test_predict.py


def write_checkpoint(path: Path, model: str, *, seed: int = 0,
                     normalization: dict[str, list[float]] | None = None,
                     amp: str = "off") -> Path:
    """A checkpoint (with sidecar) of `model` with random weights and non-trivial BatchNorm
    statistics, holding the keys evaluate, predict and export read."""
    torch.manual_seed(seed)
    net = build_model(model)
    for m in net.modules():  # fresh BN statistics (0, 1) would hide a mistake in eval mode
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    save_checkpoint(path, {"model": model, "num_classes": 10, "classes": CLASSES,
                           "normalization": normalization or NORMALIZATION, "amp": amp,
                           "channels_last": True, "spec": None, "world_size": 1,
                           "state_dict": net.state_dict(), "epoch": 3})
    return path


class TrainedRun(NamedTuple):
    """A finished run on learnable data: its directory, the prepared data, the source PNGs."""

    run: Path
    data_dir: Path
    images: Path  # train/<class>/NNN.png and test/<class>/NNN.png


def learnable_images(root: Path, *, train_per_class: int = 40, test_per_class: int = 10) -> Path:
    """PNG images whose class sets their colour (under strong noise), so that a few training
    steps give predictions that depend on the image: random pixels with random labels teach
    a net one constant answer, which would hide a wrong normalisation."""
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, (len(CLASSES), 3))
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                noisy = colours[label] + rng.normal(0, 50, (32, 32, 3))
                Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
                    folder / f"{i:03d}.png")
    return root


def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """One finished 2-epoch era_s9 run on `learnable_images`, trained on the session's first
    call and reused after (by both test modules)."""
    from ddpcifar.data.prepare import main as prepare_main
    from ddpcifar.train import main as train_main

    root = tmp_path_factory.getbasetemp() / "inference_trained"
    found = TrainedRun(root / "runs" / "tiny", root / "data", root / "images")
    if (found.run / "summary.json").is_file():
        return found
    root.mkdir(exist_ok=True)
    learnable_images(found.images)
    assert prepare_main(["--source", str(found.images), "--out", str(found.data_dir),
                         "--quiet"]) == 0
    spec = {
        "data": {"dir": str(found.data_dir), "loader": "memory", "num_workers": 0},
        "model": {"name": "era_s9"},
        "augment": {"kind": "none"},
        "train": {"epochs": 2, "global_batch_size": 16, "seed": 1, "log_every": 5},
        "eval": {"batch_size": 100, "max_samples": 5},
        "logging": {"runs_dir": str(root / "runs"), "run_name": "tiny", "progress": False,
                    "tensorboard": False},
    }
    (root / "spec.json").write_text(json.dumps(spec))
    assert train_main([str(root / "spec.json")]) == 0
    return found


def one_line_error(capsys: pytest.CaptureFixture[str], rc: int, expected: str) -> None:
    """The command failed with status 2 and exactly `expected` as its one line on stderr."""
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err == f"error: {expected}\n", err


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def random_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export_random")
    return {name: write_checkpoint(root / f"{name}.pt", name) for name in MODEL_NAMES}


@pytest.fixture(scope="module")
def eager_logits(random_checkpoints) -> Callable[[str, np.ndarray], np.ndarray]:
    """PyTorch fp32 eager logits of a model's random checkpoint, each model loaded once."""
    @functools.cache
    def classifier(model: str) -> Any:
        path = random_checkpoints[model]
        return load_torch_classifier(path, load_torch_state(path), device="cpu", amp="off")

    return lambda model, images: classifier(model).logits(images)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> TrainedRun:
    return trained_run(tmp_path_factory)


def export(*args: Any) -> int:
    return export_main([str(a) for a in args])


# ------------------------------------------------------------------ every model, every format


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_model_exports_in_every_format(model, fmt, random_checkpoints, eager_logits,
                                              tmp_path, capsys):
    assert (model, fmt) not in REFUSED, "a refused pair must be listed in docs/inference.md"
    checkpoint = random_checkpoints[model]
    out = tmp_path / f"model.{fmt}"
    assert export(checkpoint, "--format", fmt, "--out", out, "--parity-images", 6) == 0
    stdout = capsys.readouterr().out
    assert "top-1 agreement 100.00%" in stdout and f"wrote {out}" in stdout
    assert files_under(tmp_path) == [out.name, f"{out.name}.json"]  # no temporary left

    described = json.loads(out.with_name(out.name + ".json").read_text())
    assert described["format"] == fmt and described["model"] == model
    assert described["input"]["dtype"] == "uint8" and described["input"]["layout"] == "NHWC"
    assert described["input"]["shape"] == ["batch", 32, 32, 3]
    assert described["output"]["kind"] == ("log_probs" if model == "vgg8bn" else "logits")
    assert described["output"]["classes"] == CLASSES
    assert described["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert described["bytes"] == out.stat().st_size
    parity = described["parity"]
    assert parity["passed"] and parity["images"] == 6 and parity["top1_agreement"] == 1.0
    assert parity["max_abs_logit_diff"] <= MAX_ABS_DIFF

    # Independently of the parity code: raw uint8 in, a batch size of 3, eager fp32 as truth.
    images = np.random.default_rng(7).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    got, want = load_runtime(fmt, out).run(images), eager_logits(model, images)
    assert got.shape == (3, 10)
    assert np.abs(got - want).max() <= MAX_ABS_DIFF
    assert (got.argmax(1) == want.argmax(1)).all()


# ------------------------------------------------------------------ trained weights, run directory


def test_trained_export_is_recorded_in_the_run_directory(trained, tmp_path, capsys):
    from ddpcifar.data.beton import read_split

    checkpoint = trained.run / "checkpoints" / "best.pt"
    outs = [tmp_path / "tiny.onnx", tmp_path / "tiny.pt2"]
    # 120 parity images: the 100-image test split, topped up with 20 random ones.
    assert export(checkpoint, "--format", "onnx", "--out", outs[0], "--data", trained.data_dir,
                  "--parity-images", 120) == 0
    assert export(checkpoint, "--format", "pt2", "--out", outs[1], "--parity-images", 20) == 0
    stdout = capsys.readouterr().out
    assert f"recorded in {trained.run / 'exports.json'}" in stdout

    entries = json.loads((trained.run / "exports.json").read_text())
    assert [e["format"] for e in entries] == ["onnx", "pt2"]
    for entry, out in zip(entries, outs):
        assert set(entry) == {"format", "path", "bytes", "sha256", "parity", "time", "model",
                              "checkpoint"}
        assert entry["path"] == str(out.resolve()) and entry["model"] == "era_s9"
        assert entry["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        assert entry["bytes"] == out.stat().st_size
        assert entry["parity"]["passed"]
    assert entries[0]["parity"]["images"] == 120
    assert entries[0]["parity"]["source"] == (f"{trained.data_dir} test split, first 100 + "
                                              "20 random uint8 images (seed 0)")
    assert entries[1]["parity"]["source"] == "20 random uint8 images (seed 0)"

    # The exported ONNX, fed the test split's raw uint8 images, agrees with eager fp32 on every
    # image, and the trained net's answers depend on the image (so this compares something).
    images, _ = read_split(trained.data_dir, "test")
    eager = load_torch_classifier(checkpoint, load_torch_state(checkpoint), device="cpu",
                                  amp="off").logits(images).argmax(1)
    exported = load_runtime("onnx", outs[0]).run(np.ascontiguousarray(images)).argmax(1)
    assert (exported == eager).all() and len(set(eager.tolist())) >= 3


def test_parity_failure_writes_nothing(tmp_path, capsys):
    """A normalisation with std 1e-6 scales the inputs by 1e6: fp32 summation order alone then
    moves logits by far more than the tolerance, so the export must be refused."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "status.json").write_text("{}")
    checkpoint = write_checkpoint(run / "checkpoints" / "best.pt", "era_s9",
                                  normalization={"mean": [0.0] * 3, "std": [1e-6] * 3})
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc = export(checkpoint, "--format", "onnx", "--out", out_dir / "m.onnx", "--parity-images", 4)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("error: parity check failed for era_s9 as onnx, nothing written: "
                          "max |Δlogit| "), err
    assert files_under(out_dir) == []
    assert not (run / "exports.json").exists()


# ------------------------------------------------------------------ bad input


@pytest.fixture
def out_dir(tmp_path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def test_checkpoint_sha256_mismatch(random_checkpoints, tmp_path, out_dir, capsys):
    checkpoint = tmp_path / "best.pt"
    data = bytearray(random_checkpoints["era_s9"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    sidecar = random_checkpoints["era_s9"].with_name("era_s9.pt.sha256").read_text()
    checkpoint.with_name("best.pt.sha256").write_text(sidecar)
    rc = export(checkpoint, "--format", "onnx", "--out", out_dir / "m.onnx")
    digest = hashlib.sha256(bytes(data)).hexdigest()
    one_line_error(capsys, rc, f"checkpoint {checkpoint} is corrupt or incomplete: sha256 "
                               f"{digest[:12]}... does not match best.pt.sha256")
    assert files_under(out_dir) == []


def test_checkpoint_of_an_unknown_format(tmp_path, out_dir, capsys):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_text("this is not a checkpoint\n")
    checkpoint.with_name("model.pt.sha256").write_text(
        hashlib.sha256(checkpoint.read_bytes()).hexdigest() + "  model.pt\n")
    rc = export(checkpoint, "--format", "pt2", "--out", out_dir / "m.pt2")
    one_line_error(capsys, rc, f"checkpoint {checkpoint} is of an unknown format: neither a "
                               "ddpcifar .pt (a torch zip archive) nor a NumPy engine .npz")
    assert files_under(out_dir) == []


def test_checkpoint_not_found(tmp_path, out_dir, capsys):
    rc = export(tmp_path / "missing.pt", "--format", "onnx", "--out", out_dir / "m.onnx")
    one_line_error(capsys, rc, f"checkpoint not found: {tmp_path / 'missing.pt'}")


def test_numpy_engine_checkpoint_is_refused(tmp_path, out_dir, capsys):
    from ddpcifar.scratch.network import DEFAULT_ARCHITECTURE, Sequential

    checkpoint = tmp_path / "scratch_best.npz"
    Sequential(DEFAULT_ARCHITECTURE).save(checkpoint, meta={"mean": [120.0] * 3,
                                                            "std": [60.0] * 3})
    rc = export(checkpoint, "--format", "onnx", "--out", out_dir / "m.onnx")
    one_line_error(capsys, rc, f"cannot export {checkpoint}: NumPy engine .npz checkpoints are "
                               "not exportable (use python -m ddpcifar.predict with it)")
    assert files_under(out_dir) == []


@pytest.mark.parametrize("where", ["missing_dir", "parent_is_file", "is_directory"])
def test_output_path_that_cannot_be_written(where, random_checkpoints, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    out, expected = {
        "missing_dir": (tmp_path / "nope" / "m.onnx",
                        f"directory {tmp_path / 'nope'} does not exist"),
        "parent_is_file": (blocker / "m.onnx", f"{blocker} is not a directory"),
        "is_directory": (tmp_path, "it is a directory"),
    }[where]
    before = files_under(tmp_path)
    rc = export(random_checkpoints["era_s9"], "--format", "onnx", "--out", out)
    one_line_error(capsys, rc, f"cannot write {out}: {expected}")
    assert files_under(tmp_path) == before


def test_bad_input_through_a_real_process(tmp_path):
    """The installed entry point: exit status 2, one line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "ddpcifar.export", str(tmp_path / "x.pt"),
                           "--format", "onnx", "--out", str(tmp_path / "x.onnx")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert proc.stderr == f"error: checkpoint not found: {tmp_path / 'x.pt'}\n"
    assert os.listdir(tmp_path) == []


def test_pt2_needs_a_pt2_suffix(random_checkpoints, out_dir, capsys):
    out = out_dir / "model.bin"
    rc = export(random_checkpoints["era_s9"], "--format", "pt2", "--out", out)
    one_line_error(capsys, rc, "--format pt2 needs an --out ending in .pt2 (torch.export.load "
                               f"reads only those), got {out}")
    assert files_under(out_dir) == []
