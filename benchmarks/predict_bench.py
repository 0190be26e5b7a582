"""CPU inference speed of every model: PyTorch eager vs ONNX Runtime vs TorchScript vs torch.export.

    .venv/bin/python -m benchmarks.predict_bench [--models era_s9 ...] [--repeats 200] \\
        [--threads N] [--out benchmarks/results/predict_bench.json]

Each model (random weights: speed does not depend on their values) is wrapped as
`ddpcifar.export` wraps it (uint8 NHWC images in, normalisation inside) and exported to every
format in a temporary folder. Eager runs the same module twice: weights in channels_last (the
layout predict and training use) and contiguous (faster for some models at batch 1); the target
compares against the faster of the two. Per runtime: batch-1 latency (median and 90th
percentile of `--repeats` calls after `--warmup` untimed ones) and batch-256 throughput (median
of `--batch-repeats` calls, as images/s). All use the same thread count (`--threads`: torch's
intra-op threads, ONNX Runtime's intra_op_num_threads). Outputs are checked against eager first
(the export tolerance), so a broken export cannot look fast.

The runtimes are timed in blocks that take turns over `--rounds` rounds, so a burst of load from
another process hits all of them alike; not call by call, because each runtime has its own
thread pool whose threads spin for a while after a call (OpenMP's, ONNX Runtime's) and would
slow the next runtime down (measured: eager's batch-1 latency 30x worse when interleaved with
ONNX Runtime). Each block starts after a pause that outlasts that spinning, and with a few
untimed calls.

One JSON record per (model, runtime), each with the CPU model, load average, thread count,
torch and runtime versions, commit and command; the target reported against: ONNX Runtime at
least as fast as eager PyTorch at batch 1, for every model (`target.onnx_batch1_speedup` >= 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/provenance.py
from provenance import cpu_model, load_average  # noqa: E402

from ddpcifar.atomic import write_json
from ddpcifar.errors import UserError, cli_main
from ddpcifar.inference.formats import FORMATS, load_runtime, write_format
from ddpcifar.inference.graph import RawImageModel
from ddpcifar.inference.parity import MAX_ABS_DIFF
from ddpcifar.models import MODEL_NAMES, build_model

ROOT = Path(__file__).resolve().parents[1]
BIG_BATCH = 256
PAUSE_S = 0.3  # between timing blocks: longer than an idle OpenMP thread spins (200 ms at most)
BLOCK_WARMUP = 3  # untimed batch-1 calls at the start of every block: wake the runtime's threads
# CIFAR-10's train-split statistics (0..255): realistic constants for the graph, nothing more.
MEAN, STD = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)

Runner = Callable[[np.ndarray], np.ndarray]


def commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def runners(name: str, folder: Path, threads: int) -> tuple[dict[str, Runner], dict[str, Any]]:
    """Eager and every exported format of `name`, as runners; and each runtime's file size
    and version."""
    torch.manual_seed(0)
    weights = RawImageModel(build_model(name).eval(), MEAN, STD).state_dict()

    def module() -> RawImageModel:
        fresh = RawImageModel(build_model(name).eval(), MEAN, STD)
        fresh.load_state_dict(weights)
        return fresh

    run: dict[str, Runner] = {}
    info: dict[str, Any] = {}
    for layout, memory_format in EAGER_LAYOUTS.items():
        eager = module()
        eager.model.to(memory_format=memory_format)
        run[layout] = _torch_eager(eager)
        info[layout] = {"runtime": "eager", "version": torch.__version__, "file_bytes": None}
    for fmt in FORMATS:
        path = folder / f"{name}.{fmt}"
        write_format(module(), fmt, path)
        runtime = load_runtime(fmt, path, threads=threads)
        run[fmt] = runtime.run
        info[fmt] = {"runtime": runtime.name, "version": runtime.version,
                     "file_bytes": path.stat().st_size}
    return run, info


EAGER_LAYOUTS = {"eager_channels_last": torch.channels_last,
                 "eager_contiguous": torch.contiguous_format}


def _torch_eager(module: RawImageModel) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).float().numpy()
    return run


def check_outputs(name: str, run: dict[str, Runner]) -> None:
    """Every runtime agrees with eager within the export tolerance on one batch."""
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    want = run["eager_channels_last"](images)
    for key, runner in run.items():
        diff = float(np.abs(runner(images) - want).max())
        if diff > MAX_ABS_DIFF:
            raise UserError(f"{name} {key}: max |logit difference| {diff:.2e} from eager")


def time_blocks(run: dict[str, Runner], images: np.ndarray, warmup: int, repeats: int,
                rounds: int, block_warmup: int = BLOCK_WARMUP) -> dict[str, list[float]]:
    """Seconds per call of each runner on `images`: `repeats` calls each, in blocks that take
    turns over `rounds` rounds, each block after a pause and a few untimed calls."""
    for runner in run.values():
        for _ in range(warmup):  # allocations, kernel choice, lazy initialisation
            runner(images)
    times: dict[str, list[float]] = {key: [] for key in run}
    rounds = max(1, min(rounds, repeats))
    for index in range(rounds):
        calls = repeats // rounds + (index < repeats % rounds)
        for key, runner in run.items():
            time.sleep(PAUSE_S)
            for _ in range(block_warmup):
                runner(images)
            for _ in range(calls):
                start = time.perf_counter()
                runner(images)
                times[key].append(time.perf_counter() - start)
    return times


def benchmark_model(name: str, args: argparse.Namespace, provenance: dict[str, Any]
                    ) -> list[dict[str, Any]]:
    """One record per runtime of `name`."""
    with tempfile.TemporaryDirectory() as tmp:
        run, info = runners(name, Path(tmp), args.threads)
        check_outputs(name, run)
        rng = np.random.default_rng(1)
        one = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
        big = rng.integers(0, 256, (BIG_BATCH, 32, 32, 3), dtype=np.uint8)
        load_before = load_average()
        single = time_blocks(run, one, args.warmup, args.repeats, args.rounds)
        # One untimed call per block is enough at batch 256: a call outlasts any wake-up.
        batched = time_blocks(run, big, min(args.warmup, 2), args.batch_repeats, args.rounds,
                              block_warmup=1)
        load_after = load_average()
    records = []
    for key in run:
        latency = sorted(single[key])
        records.append({
            "model": name, "runtime": info[key]["runtime"],
            "format": key if key in FORMATS else None,
            "layout": {"eager_channels_last": "channels_last",
                       "eager_contiguous": "contiguous"}.get(key),
            "runtime_version": info[key]["version"], "file_bytes": info[key]["file_bytes"],
            "batch1_median_ms": round(1e3 * statistics.median(latency), 4),
            "batch1_p90_ms": round(1e3 * latency[int(0.9 * (len(latency) - 1))], 4),
            "batch1_repeats": args.repeats,
            f"batch{BIG_BATCH}_images_per_s": round(BIG_BATCH / statistics.median(batched[key]),
                                                    1),
            f"batch{BIG_BATCH}_repeats": args.batch_repeats,
            "threads": args.threads, "load_average_before": load_before,
            "load_average_after": load_after, **provenance,
        })
    eager_ms = min(r["batch1_median_ms"] for r in records if r["runtime"] == "eager")
    for record in records:
        record["batch1_speedup_vs_eager"] = round(eager_ms / record["batch1_median_ms"], 3)
    return records


def print_table(records: list[dict[str, Any]]) -> None:
    print(f"{'model':<10} {'runtime':<22} {'batch-1 ms':>10} {'p90 ms':>8} "
          f"{'x eager':>8} {f'b{BIG_BATCH} img/s':>11} {'MB':>7}")
    for r in records:
        size = "" if r["file_bytes"] is None else f"{r['file_bytes'] / 1e6:.1f}"
        label = r["runtime"] + (f" ({r['layout']})" if r["layout"] else "")
        print(f"{r['model']:<10} {label:<22} {r['batch1_median_ms']:>10.3f} "
              f"{r['batch1_p90_ms']:>8.3f} {r['batch1_speedup_vs_eager']:>8.2f} "
              f"{r[f'batch{BIG_BATCH}_images_per_s']:>11.1f} {size:>7}", flush=True)


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.predict_bench",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), metavar="NAME")
    parser.add_argument("--repeats", type=int, default=200,
                        help="timed batch-1 calls per runtime (default: 200)")
    parser.add_argument("--warmup", type=int, default=20,
                        help="untimed batch-1 calls per runtime first (default: 20)")
    parser.add_argument("--batch-repeats", type=int, default=10,
                        help=f"timed batch-{BIG_BATCH} calls per runtime (default: 10)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of timing blocks the calls are spread over (default: 5)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="intra-op threads for every runtime (default: torch's choice, "
                             f"{torch.get_num_threads()} here)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "predict_bench.json", help="JSON records (default: %(default)s)")
    args = parser.parse_args(argv)
    for name in args.models:
        if name not in MODEL_NAMES:
            raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if min(args.repeats, args.batch_repeats, args.threads, args.rounds) < 1 or args.warmup < 0:
        raise UserError("--repeats, --batch-repeats, --rounds and --threads must be >= 1, "
                        "--warmup >= 0")
    if not args.out.parent.is_dir():
        raise UserError(f"cannot write {args.out}: directory {args.out.parent} does not exist")

    torch.set_num_threads(args.threads)
    provenance = {"cpu": cpu_model(), "cpus_visible": len(os.sched_getaffinity(0)),
                  "torch": torch.__version__, "commit": commit(),
                  "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.predict_bench",
                                       *(argv if argv is not None else sys.argv[1:])]),
                  "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    print(f"# {provenance['cpu']}, {args.threads} threads, batch-1 median of {args.repeats} "
          f"after {args.warmup} warm-up, batch {BIG_BATCH} median of {args.batch_repeats}, in "
          f"{args.rounds} rounds of blocks; x eager: against the faster eager layout; "
          f"load average {load_average()}")
    records: list[dict[str, Any]] = []
    for name in args.models:
        model_records = benchmark_model(name, args, provenance)
        print_table(model_records)
        records.extend(model_records)
    onnx = {r["model"]: r["batch1_speedup_vs_eager"] for r in records
            if r["runtime"] == "onnxruntime"}
    met = all(v >= 1 for v in onnx.values())
    print(f"# target (ONNX Runtime at least as fast as eager at batch 1, every model): "
          f"{'met' if met else 'NOT met'} ({', '.join(f'{k} {v:.2f}x' for k, v in onnx.items())})"
          f"; load average at the end {load_average()}")
    write_json(args.out, {"records": records, "target": {
        "what": "onnxruntime batch-1 median latency <= the faster eager layout's, every model",
        "met": met, "onnx_batch1_speedup": onnx}})
    print(f"# wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
