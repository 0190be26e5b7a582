"""The fast CUDA defaults: amp choice, backend flags, batch layout; real CUDA checks marked `gpu`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpcifar.data.batch import Normalizer
from ddpcifar.engine.device import configure_backends
from ddpcifar.engine.wrap import resolve_amp

REPO = Path(__file__).resolve().parent.parent
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")


@pytest.fixture
def restore_backends():
    """configure_backends sets process-wide flags: put them back for the other tests."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) = saved[2:]


# --- CPU ----------------------------------------------------------------------------------------


def test_auto_amp_is_bf16_on_cpu_and_on_gpus_with_bf16(monkeypatch) -> None:
    assert resolve_amp("auto", torch.device("cpu")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_amp("auto", torch.device("cuda")) is torch.bfloat16  # no GradScaler, no sync
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_amp("auto", torch.device("cuda")) is torch.float16  # pre-Ampere: fp16 + scaler
    assert resolve_amp("off", torch.device("cuda")) is None
    assert resolve_amp("fp16", torch.device("cuda")) is torch.float16
    assert resolve_amp("bf16", torch.device("cuda")) is torch.bfloat16


def test_backends_fast_on_cuda_unless_deterministic(restore_backends) -> None:
    assert configure_backends(torch.device("cuda"), False) == {
        "deterministic": False, "tf32": True, "cudnn_benchmark": True}
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    assert configure_backends(torch.device("cuda"), True)["tf32"] is False
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    # On CPU neither TF32 nor cudnn applies, whatever `deterministic` says.
    assert configure_backends(torch.device("cpu"), False) == {
        "deterministic": False, "tf32": False, "cudnn_benchmark": False}


@pytest.mark.parametrize("channels_last", [True, False])
def test_normalizer_layout_follows_the_spec(channels_last: bool) -> None:
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8))
    norm = Normalizer([125.0, 120.0, 110.0], [60.0, 61.0, 62.0], torch.device("cpu"), channels_last)
    out = norm(images)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=fmt)
    expected = (images.double() - torch.tensor([125.0, 120.0, 110.0]).view(1, 3, 1, 1)) / torch.tensor(
        [60.0, 61.0, 62.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)


# --- CUDA (skipped without a GPU) ---------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_cuda_auto_amp_is_bf16_where_supported() -> None:
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    assert resolve_amp("auto", torch.device("cuda")) is expected


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ddpcifar.data.prepare import main as prep

    out = tmp_path_factory.mktemp("cuda") / "syn"
    assert prep(["--synthetic", "200", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.gpu
@needs_cuda
def test_two_cuda_steps_match_cpu(restore_backends) -> None:
    """fp32, no TF32: two SGD steps on CUDA give the CPU's losses and weights."""
    from ddpcifar.models import build_model

    configure_backends(torch.device("cuda"), True)
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(32, 3, 32, 32, generator=gen), torch.randint(0, 10, (32,), generator=gen)
    results = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = build_model("resnet9").to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        losses = []
        for _ in range(2):
            loss = torch.nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        results.append((losses, [p.detach().cpu() for p in model.parameters()]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-3)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-2)


@pytest.mark.gpu
@needs_cuda
def test_two_step_torchrun_on_cuda(synthetic: Path, tmp_path: Path) -> None:
    """torchrun (nccl on CUDA), auto amp: 2 steps finish, the summary says so, the loss is finite."""
    sets = [f"data.dir={synthetic}", "train.epochs=1", "train.global_batch_size=100",
            f"logging.runs_dir={tmp_path}", "logging.run_name=cuda2", "logging.progress=false",
            "train.deterministic=false"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "ddpcifar.train", "specs/airbench.json", "--device", "cuda"]
    cmd += [a for s in sets for a in ("--set", s)]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "cuda2" / "summary.json").read_text())
    assert summary["steps"] == 2
    assert np.isfinite(summary["final"]["loss"]) and summary["final"]["count"] == 40


@pytest.mark.gpu
@needs_cuda
def test_ffcv_loader_to_the_gpu(synthetic: Path) -> None:
    pytest.importorskip("ffcv", reason="FFCV unavailable")
    from ddpcifar.data.config import AugmentConfig, DataConfig
    from ddpcifar.data.loaders import build_loader

    if not (synthetic / "train.beton").is_file():
        pytest.skip("FFCV unavailable when the data was prepared")
    cuda = torch.device("cuda")
    for channels_last in (True, False):
        loader = build_loader(DataConfig(dir=synthetic, loader="ffcv", num_workers=2), AugmentConfig(),
                              split="train", batch_size=50, train=True, rank=0, world_size=1, seed=0,
                              device=cuda, mean=[128.0] * 3, std=[64.0] * 3, channels_last=channels_last)
        batch = next(iter(loader))
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        assert batch.images.device.type == batch.labels.device.type == batch.index.device.type == "cuda"
        assert batch.images.is_contiguous(memory_format=fmt) and batch.images.shape == (50, 3, 32, 32)
