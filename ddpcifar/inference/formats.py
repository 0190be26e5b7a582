"""Writing a `RawImageModel` as ONNX, TorchScript or torch.export, and running each file in its
own runtime (ONNX Runtime, `torch.jit.load`, `torch.export.load`) on the CPU.

ONNX goes through `torch.onnx.export(dynamo=True)`, the exporter built on torch.export: it is
torch's default since 2.9, and the TorchScript-based one (`dynamo=False`) warns that it is
deprecated and will be removed. TorchScript is `torch.jit.trace` (the models have no
data-dependent control flow, so a trace is the whole graph); torch 2.14 marks torch.jit
deprecated, and the warning is silenced only around the calls that this format needs.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ddpcifar.inference.graph import INPUT_NAME, RawImageModel, example_input, output_name

FORMATS = ("onnx", "torchscript", "pt2")
# (model, format) pairs that cannot be exported, with the one-line reason; every built-in model
# exports in every format today (tests/test_export.py checks each pair).
REFUSED: dict[tuple[str, str], str] = {}
MAX_BATCH = 1 << 16  # the dynamic batch dimension's upper bound that torch.export records

Runner = Callable[[np.ndarray], np.ndarray]  # uint8 (N, 32, 32, 3) -> float32 (N, classes)


@dataclass(frozen=True)
class Runtime:
    """An exported file loaded in its own runtime."""

    name: str  # "onnxruntime", "torch.jit", "torch.export"
    version: str
    run: Runner


def write_format(module: RawImageModel, fmt: str, path: Path) -> dict[str, object]:
    """Export `module` (eval mode, CPU) as `fmt` to `path`; returns how (exporter, opset...)."""
    module = module.eval()
    example = example_input()
    if fmt == "onnx":
        return _write_onnx(module, example, path)
    if fmt == "torchscript":
        with torch.no_grad(), _quiet_jit():
            traced = torch.jit.trace(module, (example,))
            torch.jit.save(traced, str(path))
        return {"exporter": "torch.jit.trace", "torch": torch.__version__}
    if fmt == "pt2":
        program = torch.export.export(module, (example,), dynamic_shapes=_batch_dynamic())
        torch.export.save(program, str(path))
        return {"exporter": "torch.export.export", "torch": torch.__version__}
    raise ValueError(f"unknown format {fmt!r}")


def load_runtime(fmt: str, path: Path, *, threads: int | None = None) -> Runtime:
    """`path` loaded by `fmt`'s runtime, as a function of uint8 NHWC batches (CPU)."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return Runtime("onnxruntime", ort.__version__,
                       lambda x: session.run(None, {INPUT_NAME: x})[0])
    if fmt == "torchscript":
        with _quiet_jit():
            loaded = torch.jit.load(str(path), map_location="cpu")
        return Runtime("torch.jit", torch.__version__, _torch_runner(loaded.eval()))
    if fmt == "pt2":
        loaded = torch.export.load(str(path)).module()
        return Runtime("torch.export", torch.__version__, _torch_runner(loaded))
    raise ValueError(f"unknown format {fmt!r}")


def _write_onnx(module: RawImageModel, example: torch.Tensor, path: Path) -> dict[str, object]:
    # verbose=False: otherwise the exporter prints its steps on stdout, the command's output.
    program = torch.onnx.export(module, (example,), dynamo=True, verbose=False,
                                input_names=[INPUT_NAME],
                                output_names=[output_name(module.model)],
                                dynamic_shapes=_batch_dynamic())
    assert program is not None
    program.save(str(path), external_data=False)  # one self-contained file
    opset = next((o.version for o in program.model_proto.opset_import
                  if o.domain in ("", "ai.onnx")), None)
    return {"exporter": "torch.onnx.export(dynamo=True)", "torch": torch.__version__,
            "opset": opset}


def _batch_dynamic() -> dict[str, dict[int, torch.export.Dim]]:
    return {INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}


def _torch_runner(module: Callable[[torch.Tensor], torch.Tensor]) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()
    return run


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """Silence torch.jit's deprecation (FutureWarning) and tracer warnings for one call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield
