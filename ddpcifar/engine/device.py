"""A process's device and its process-wide torch backend settings, decided in one place."""

from __future__ import annotations

import torch


def select_device(choice: str, index: int | None = None) -> torch.device:
    """The device for `--device auto|cpu|cuda` (auto: CUDA if available); `index` picks the GPU."""
    use_cuda = torch.cuda.is_available() if choice == "auto" else choice == "cuda"
    if not use_cuda:
        return torch.device("cpu")
    return torch.device("cuda") if index is None else torch.device("cuda", index)


def configure_backends(device: torch.device, deterministic: bool) -> dict[str, bool]:
    """Set determinism, TF32 and cudnn autotuning for `device`; returns what was chosen.

    deterministic: deterministic algorithms, no TF32, no autotuning (repeatable, slower on CUDA).
    Otherwise, on CUDA: TF32 matmuls/convolutions (~10-bit mantissa inputs, fp32 accumulation:
    several times the fp32 throughput on Ampere and later, and what runs outside autocast
    anyway) and cudnn.benchmark (input shapes are fixed per run, so the autotuned kernel choice
    is paid once, in the first steps, which images_per_s excludes).
    """
    # warn_only: a few ops (e.g. index_put on CUDA) have no deterministic kernel; warn, not fail.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    fast = device.type == "cuda" and not deterministic
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast
    torch.backends.cudnn.benchmark = fast
    # cudnn picks non-deterministic algorithms otherwise, even with the flag above.
    torch.backends.cudnn.deterministic = deterministic
    return {"deterministic": deterministic, "tf32": fast, "cudnn_benchmark": fast}
