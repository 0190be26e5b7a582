"""A checkpoint of either engine as a `Classifier`: uint8 RGB images in, logits out.

A torch `.pt` (sha256 sidecar checked, loaded with weights_only=True by ddpcifar.engine.checkpoint)
or a NumPy engine `.npz`. Both carry their input normalisation; a `.pt` also its class names.
`ddpcifar.evaluate` shares the `.npz` detection and loading, `predict` and `export` the rest.
torch is imported only for a torch checkpoint, so a `.npz` runs on NumPy alone.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np

from ddpcifar.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ddpcifar.scratch.network import Sequential

SCRATCH_MODEL = "scratch_cnn"  # ddpcifar.spec.SCRATCH_MODEL, without importing the torch models
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive; so does np.savez


class Classifier(Protocol):
    """What predict needs from a checkpoint, whichever engine wrote it."""

    model: str  # registry name, or "scratch_cnn" for the NumPy engine
    classes: list[str] | None  # None: a NumPy engine file, which does not save them
    num_classes: int
    epoch: int | None
    device: str  # where it computes: "cpu", "cuda", ...
    amp: str  # the autocast dtype as a word: "off", "bf16", "fp16"

    def logits(self, images: np.ndarray, *, tta: int = 0) -> np.ndarray:
        """float32 (N, classes) for uint8 (N, 32, 32, 3) RGB `images`."""
        ...


def is_scratch_checkpoint(path: Path) -> bool:
    """A NumPy engine checkpoint: named .npz, or a zip archive holding 'architecture.npy' (a
    torch .pt is a zip archive too, without that member)."""
    if path.suffix.lower() == ".npz":
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            return "architecture.npy" in archive.namelist()
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):
        return False  # missing or not a zip: the torch path says why


def refuse_torch_options(checkpoint: Path, *, device: str, amp: str | None, tta: int | None,
                         loader: str | None = None) -> None:
    """UserError for an option only the torch engine honours, given a NumPy engine checkpoint."""
    refused = [
        (amp is not None, f"--amp {amp}", "it computes in its training dtype, without autocast"),
        (bool(tta), f"--tta {tta}", "it has no test-time augmentation (use --tta 0)"),
        (device == "cuda", "--device cuda", "it runs on the CPU"),
        (loader == "ffcv", "--loader ffcv", "it reads the test split into memory"),
    ]
    for bad, option, why in refused:
        if bad:
            raise UserError(f"{option} does not apply to the NumPy engine checkpoint "
                            f"{checkpoint}: {why}")


def load_scratch(checkpoint: Path) -> tuple[Sequential, dict[str, Any]]:
    """A NumPy engine network and its checked metadata (mean, std, epoch, eval_batch_size when
    saved), or a one-line UserError saying why not."""
    from ddpcifar.scratch.network import Sequential, read_meta

    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    if not zipfile.is_zipfile(checkpoint):
        raise UserError(f"cannot load checkpoint {checkpoint}: not an .npz (zip) archive")
    try:
        net, saved = Sequential.load(checkpoint), read_meta(checkpoint)
        checked: dict[str, Any] = {k: tuple(float(v) for v in saved[k])
                                   for k in ("mean", "std") if k in saved}
        checked.update({k: int(saved[k]) for k in ("epoch", "eval_batch_size") if k in saved})
    except Exception as err:  # zipfile, NumPy, JSON and UserError for damaged or foreign files
        lines = str(err).strip().splitlines()
        reason = lines[0][:160] if lines else type(err).__name__
        raise UserError(f"cannot load checkpoint {checkpoint}: {reason}") from None
    return net, checked


def load_torch_state(checkpoint: Path) -> dict[str, Any]:
    """A verified torch checkpoint's dict; one line naming the problem otherwise.

    The sidecar is checked first when there is one, so a truncated or altered `.pt` reads as
    a sha256 mismatch; a file that is not a zip archive at all is of an unknown format.
    """
    from ddpcifar.engine.checkpoint import load_checkpoint

    if checkpoint.is_dir():
        raise UserError(f"checkpoint {checkpoint} is a directory, not a file")
    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    sidecar = checkpoint.with_name(checkpoint.name + ".sha256")
    if sidecar.is_file():
        from ddpcifar.engine.checkpoint import verify_checkpoint

        verify_checkpoint(checkpoint)
    if not _starts_with_zip_magic(checkpoint):
        raise UserError(f"checkpoint {checkpoint} is of an unknown format: neither a ddpcifar "
                        ".pt (a torch zip archive) nor a NumPy engine .npz")
    return load_checkpoint(checkpoint)


def _starts_with_zip_magic(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == _ZIP_MAGIC
    except OSError as err:
        raise UserError(f"cannot read checkpoint {path}: {err.strerror or err}") from None


@dataclass
class TorchClassifier:
    """A torch engine checkpoint's model in eval mode, with its normalisation and autocast."""

    model: str
    classes: list[str]
    num_classes: int
    epoch: int | None
    module: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    outputs_log_probs: bool
    device: str
    amp: str
    normalize: Any  # ddpcifar.data.batch.Normalizer: uint8 NCHW -> float, channels_last
    amp_dtype: torch.dtype | None

    def logits(self, images: np.ndarray, *, tta: int = 0) -> np.ndarray:
        """The model's output (under TTA `tta`: ddpcifar.engine.evaluation.tta_logits)."""
        import torch

        from ddpcifar.engine.evaluation import tta_logits

        dev = next(self.module.parameters()).device
        # A copy: torch warns about (and must not write into) a read-only array.
        x = self.normalize(torch.from_numpy(np.array(images, dtype=np.uint8)).to(dev)
                           .permute(0, 3, 1, 2))
        with torch.no_grad(), torch.autocast(dev.type, dtype=self.amp_dtype or torch.float32,
                                             enabled=self.amp_dtype is not None):
            out = self.module(x).float()
            if tta:
                out = tta_logits(self.module, x, tta, out)
        return out.float().cpu().numpy()


@dataclass
class NumpyClassifier:
    """A NumPy engine `.npz` network, in the dtype it trained in, on the CPU."""

    model: str
    classes: list[str] | None
    num_classes: int
    epoch: int | None
    net: Sequential
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: str = "cpu"
    amp: str = "off"

    def logits(self, images: np.ndarray, *, tta: int = 0) -> np.ndarray:
        from ddpcifar.scratch.augment import Normalizer

        if tta:
            raise UserError("a NumPy engine checkpoint has no test-time augmentation")
        normalize = Normalizer(self.mean, self.std, self.net.dtype)
        return self.net.forward(normalize(images), train=False).astype(np.float32)


def load_torch_classifier(checkpoint: Path, state: dict[str, Any], *, device: str = "auto",
                          amp: str | None = None) -> TorchClassifier:
    """`state` (from `load_torch_state`) ready to classify on `device`; `amp` None: the run's."""
    from ddpcifar.data.batch import Normalizer
    from ddpcifar.engine.device import select_device
    from ddpcifar.engine.state import load_model
    from ddpcifar.engine.wrap import resolve_amp

    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available (use --device cpu "
                            "or auto)")
    dev = select_device(device)
    module = load_model(state, checkpoint, dev).eval()
    norm = state["normalization"]
    amp_dtype = resolve_amp(amp or state["amp"], dev)
    return TorchClassifier(
        model=state["model"], classes=list(state["classes"]), num_classes=state["num_classes"],
        epoch=state.get("epoch"), module=module, mean=_triple(norm["mean"]),
        std=_triple(norm["std"]), outputs_log_probs=bool(getattr(module, "outputs_log_probs",
                                                                  False)),
        device=str(dev), amp=_amp_word(amp_dtype),
        # The loaders' normaliser (channels_last, as evaluate feeds it): the same float inputs.
        normalize=Normalizer(norm["mean"], norm["std"], dev), amp_dtype=amp_dtype)


def load_classifier(checkpoint: Path, *, device: str = "auto", amp: str | None = None,
                    tta: int = 0) -> Classifier:
    """Either engine's checkpoint as a Classifier (a `.npz`'s `classes` are None: it saves
    none); options a `.npz` cannot honour are refused."""
    if not checkpoint.exists() and not checkpoint.is_symlink():
        raise UserError(f"checkpoint not found: {checkpoint}")
    if checkpoint.is_file() and is_scratch_checkpoint(checkpoint):
        refuse_torch_options(checkpoint, device=device, amp=amp, tta=tta)
        net, saved = load_scratch(checkpoint)
        if "mean" not in saved or "std" not in saved:
            raise UserError(f"checkpoint {checkpoint} has no saved input normalisation "
                            "(written before it was saved): retrain, or use ddpcifar.evaluate "
                            "with --data")
        if tuple(net.input_shape) != (32, 32, 3):
            raise UserError(f"checkpoint {checkpoint} takes inputs of shape "
                            f"{tuple(net.input_shape)}, not 32x32 RGB images")
        return NumpyClassifier(model=SCRATCH_MODEL, classes=None, num_classes=net.num_outputs,
                               epoch=saved.get("epoch"), net=net, mean=_triple(saved["mean"]),
                               std=_triple(saved["std"]))
    return load_torch_classifier(checkpoint, load_torch_state(checkpoint), device=device,
                                 amp=amp)


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c


def _amp_word(dtype: torch.dtype | None) -> str:
    return "off" if dtype is None else {"bfloat16": "bf16", "float16": "fp16"}[
        str(dtype).removeprefix("torch.")]
