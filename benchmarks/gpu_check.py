"""The GPU check: synthetic data, airbench94's timing, the compiled step, tests, torchrun
training matrix, evaluation and the other timings, in that order (what matters most first:
a step that runs out of time budget is skipped).

    python benchmarks/gpu_check.py OUT [--device cuda|cpu] [--tiny] [--budget-s 330]

Run by benchmarks/gpu_check.sh (which installs the wheels first and keeps the log); from the
repository root. Everything goes to OUT/gpu_check.json; progress and every subprocess's output
to stdout (the shell script tees it into OUT/gpu_check.log). A failing step is recorded in
`failures` and the check goes on, so one run shows every problem. `--device cpu --tiny` is the
dry run tests/test_gpu_check.py runs on CPU (gloo, 512 images, a few steps).

Timing conventions (STYLE.md, "measure honestly"): throughput excludes warm-up steps (and so
cudnn autotuning and torch.compile); CUDA timings use events and synchronize; the step split
synchronizes between phases, so its parts add up to a slower step than the unsplit throughput.
The compiled step (benchmarks/compile_bench.py, eager against torch.compile of airbench94's
step, interleaved) reports its compile time apart; the dry run compiles with the aot_eager
backend (no code generation: minutes on a 2-core CPU), which checks the plumbing only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
CIFAR10_TRAIN = 50_000  # what the projection scales to (the synthetic set has the same size)
AIRBENCH94_EPOCHS = 9.9
MODELS = {"era_s9": "specs/era_s9.json", "resnet9": "specs/resnet9.json",
          "airbench": "specs/airbench.json", "airbench94": "specs/airbench94.json"}


class Check:
    """Collects results and failures; prints what it does with the time since the start."""

    def __init__(self, out: Path, device: str, tiny: bool, budget_s: float) -> None:
        self.out, self.device, self.tiny, self.budget_s = out, device, tiny, budget_s
        self.t0 = time.perf_counter()
        self.result: dict[str, Any] = {"failures": [], "skipped": []}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def say(self, message: str) -> None:
        print(f"[gpu_check {self.elapsed():6.1f}s] {message}", flush=True)

    def fail(self, step: str, message: str) -> None:
        self.say(f"FAILED {step}: {message}")
        self.result["failures"].append({"step": step, "error": message[-2000:]})

    def skip(self, step: str, why: str) -> None:
        self.say(f"skipped {step}: {why}")
        self.result["skipped"].append({"step": step, "why": why})

    def time_left(self, needed_s: float) -> bool:
        return self.elapsed() + needed_s <= self.budget_s

    def run(self, step: str, cmd: list[str], timeout_s: float, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess | None:
        """Run a subprocess from the repository root, its output into the log; None on failure."""
        self.say(f"$ {' '.join(cmd)}")
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=max(timeout_s, 1))
        except subprocess.TimeoutExpired as err:
            out = err.stdout if isinstance(err.stdout, str) else (err.stdout or b"").decode(errors="replace")
            print(out, flush=True)
            self.fail(step, f"timed out after {timeout_s:.0f} s")
            return None
        print(proc.stdout, end="", flush=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
            self.fail(step, f"exit status {proc.returncode}: {tail}")
            return None
        return proc


# --------------------------------------------------------------------------- environment


def environment(device: str) -> dict[str, Any]:
    import numpy
    import torch

    from provenance import commit, cpu_model, load_average, this_command

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "numpy": numpy.__version__, "cuda": torch.version.cuda,
                            "device": device, "cpu_count": os.cpu_count(), "cpu": cpu_model(),
                            "commit": commit(), "command": this_command(),
                            "load_before": load_average()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}",
                    bf16=torch.cuda.is_bf16_supported(including_emulation=False),
                    cudnn=torch.backends.cudnn.version(),
                    nccl=".".join(map(str, torch.cuda.nccl.version())))
    try:
        import ddpcifar.data.ffcv_import  # noqa: F401
        info["ffcv"] = True
    except (ImportError, OSError) as err:
        info["ffcv"] = False
        info["ffcv_error"] = f"{type(err).__name__}: {err}"
    return info


# --------------------------------------------------------------------------- steps


def run_gpu_tests(check: Check, ffcv: bool) -> None:
    """pytest -m gpu over the files that hold gpu-marked tests (all skip without CUDA)."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text(encoding="utf-8"))
    if not ffcv:  # its fixtures write betons, which needs FFCV
        files = [f for f in files if f != "tests/test_loaders.py"]
        check.skip("pytest tests/test_loaders.py", "FFCV unavailable")
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
           "-o", "addopts=", "-rs", *files]
    proc = check.run("pytest -m gpu", cmd, timeout_s=120 if not check.tiny else 60)
    last = proc.stdout.strip().splitlines()[-1] if proc is not None and proc.stdout.strip() else None
    check.result["pytest_gpu"] = {"files": files, "ok": proc is not None, "summary": last}


def prepare_data(check: Check, work: Path) -> Path | None:
    n = 80 if check.tiny else CIFAR10_TRAIN  # tiny: 80 train + 16 test images
    data = work / "synthetic"
    t0 = time.perf_counter()
    proc = check.run("data_prep --synthetic", [sys.executable, "data_prep.py", "--synthetic", str(n),
                                               "--out", str(data), "--quiet"], timeout_s=120)
    check.result["data"] = {"synthetic_train": n, "synthetic_test": n // 5, "dir": str(data),
                            "seconds": round(time.perf_counter() - t0, 2), "ok": proc is not None,
                            "files": sorted(p.name for p in data.iterdir()) if data.is_dir() else []}
    return data if proc is not None else None


def train_matrix(check: Check, data: Path, work: Path, ffcv: bool) -> list[dict[str, Any]]:
    """2 epochs per configuration through torchrun (nccl on CUDA, gloo on CPU)."""
    cuda = check.device == "cuda"
    half = "fp16" if cuda else "off"  # fp16 needs CUDA; the dry run checks 'off' in its place
    # (name, spec, overrides); the first that succeeds is the one evaluated afterwards.
    runs: list[tuple[str, str, list[str]]] = [
        ("airbench-memory-bf16-cl", "specs/airbench.json", ["train.amp=bf16"]),
        (f"airbench-memory-{half}-cl", "specs/airbench.json", [f"train.amp={half}"]),
        ("airbench-memory-bf16-nocl", "specs/airbench.json", ["train.amp=bf16", "model.channels_last=false"]),
    ]
    if ffcv:
        runs.append(("airbench-ffcv-bf16-cl", "specs/airbench.json",
                     ["train.amp=bf16", "data.loader=ffcv"]))
    else:
        check.say("FFCV unavailable: skipped FFCV loader checks")
        check.skip("train airbench-ffcv-bf16-cl", "FFCV unavailable")
    if not check.tiny:
        # airbench94 and the compiled run first among the optional ones: the budget skips the last.
        if (ROOT / MODELS["airbench94"]).is_file():
            runs.insert(0, ("airbench94-memory-auto", MODELS["airbench94"], []))
        runs.insert(1, ("airbench-memory-bf16-cl-compile", "specs/airbench.json",
                        ["train.amp=bf16", "model.compile=true"]))
        runs += [
            ("airbench-memory-bf16-cl-deterministic", "specs/airbench.json",
             ["train.amp=bf16", "train.deterministic=true"]),
            ("era_s9-memory-auto-albumentations", "specs/era_s9.json", []),
        ]
    results = []
    for name, spec, overrides in runs:
        per_run_s = 25 if check.tiny else 75
        if not check.time_left(per_run_s):
            check.skip(f"train {name}", "time budget")
            continue
        results.append(train_once(check, name, spec, overrides, data, work, per_run_s * 2))
    return results


def train_once(check: Check, name: str, spec: str, overrides: list[str], data: Path, work: Path,
               timeout_s: float) -> dict[str, Any]:
    sets = [f"data.dir={data}", "train.epochs=2", f"logging.runs_dir={work / 'runs'}",
            f"logging.run_name={name}", "logging.progress=false", "logging.tensorboard=false",
            "train.deterministic=false", "eval.every=2", *overrides]
    if check.tiny:
        # 2 steps an epoch on 80 images: the plumbing, not the numbers (CPU bf16 is slow).
        sets += ["train.global_batch_size=32", "eval.batch_size=16", "data.num_workers=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "ddpcifar.train", spec, "--device", check.device]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = check.run(f"train {name}", cmd, timeout_s=timeout_s)
    row: dict[str, Any] = {"name": name, "spec": spec, "overrides": overrides, "ok": proc is not None,
                           "command_s": round(time.perf_counter() - t0, 2)}
    summary_path = work / "runs" / name / "summary.json"
    if proc is not None and summary_path.is_file():
        from ddpcifar.runs.reader import load_summary  # importable once main() set sys.path

        summary = load_summary(summary_path.parent) or {}
        row.update(images_per_s=summary.get("images_per_s"), wall_time_s=summary.get("wall_time_s"),
                   train_time_s=summary.get("train_time_s"), final_top1=summary["final"].get("top1"),
                   best_top1=(summary.get("best") or {}).get("top1"),
                   run_dir=str(summary_path.parent))
    return row


def evaluate_run(check: Check, run: dict[str, Any], data: Path) -> None:
    if not run.get("ok"):
        check.skip("evaluate", f"run {run['name']} failed")
        return
    best = Path(run["run_dir"]) / "checkpoints" / "best.pt"
    proc = check.run("evaluate", [sys.executable, "-m", "ddpcifar.evaluate", str(best), "--data", str(data),
                                  "--json", "--device", check.device], timeout_s=90)
    if proc is None:
        return
    metrics = json.loads(proc.stdout[proc.stdout.index("{"):])
    agrees = abs(metrics["top1"] - (run.get("best_top1") or 0.0)) < 1e-6
    check.result["evaluate"] = {"run": run["name"], "top1": metrics["top1"], "loss": metrics["loss"],
                                "count": metrics["count"], "matches_training_best": agrees}
    if not agrees:
        check.fail("evaluate", f"evaluate top1 {metrics['top1']} != training best {run.get('best_top1')}")


# --------------------------------------------------------------------------- in-process timings


class Clock:
    """Elapsed seconds between marks: CUDA events on the GPU (after a synchronize), else perf_counter."""

    def __init__(self, device) -> None:
        import torch

        self.cuda = device.type == "cuda"
        self.torch = torch

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def mark(self):
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start, stop) -> float:
        if self.cuda:
            return start.elapsed_time(stop) / 1000.0
        return stop - start


def build_parts(name: str, spec_path: str, data: Path, device, tiny: bool):
    """(spec, model, loader, optimizer, amp dtype) built with ddpcifar's own builders."""
    import torch

    from ddpcifar.data.loaders import build_loader
    from ddpcifar.data.meta import load_meta
    from ddpcifar.engine.device import configure_backends
    from ddpcifar.engine.wrap import resolve_amp
    from ddpcifar.models import build_model
    from ddpcifar.spec import load_spec

    overrides = [f"data.dir={data}", "train.deterministic=false"]
    if tiny:  # fp32 on CPU: bf16 autocast is several times slower there
        overrides += ["train.global_batch_size=16", "data.num_workers=1", "train.amp=off"]
    spec = load_spec(ROOT / spec_path, overrides, cuda=device.type == "cuda")
    configure_backends(device, spec.train.deterministic)
    meta = load_meta(data)
    torch.manual_seed(0)
    model = build_model(spec.model.name, num_classes=10)
    fmt = torch.channels_last if spec.model.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    loader = build_loader(spec.data, spec.augment, split="train", batch_size=spec.train.global_batch_size,
                          train=True, rank=0, world_size=1, seed=0, device=device, mean=meta.mean,
                          std=meta.std, channels_last=spec.model.channels_last)
    # Plain SGD at a small lr: the timing of a step, not the recipe's trajectory.
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True,
                          weight_decay=5e-4, foreach=True)
    return spec, model, loader, opt, resolve_amp(spec.train.amp, device)


def batches(loader):
    """Batches forever, epoch after epoch."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def measure_model(name: str, spec_path: str, data: Path, device, tiny: bool) -> dict[str, Any]:
    """images/s of unsynchronised steps after warm-up, and the synchronised step split."""
    import torch
    import torch.nn.functional as F

    spec, model, loader, opt, amp = build_parts(name, spec_path, data, device, tiny)
    clock = Clock(device)
    warmup, steps = (1, 2) if tiny else (15, 40)
    stream = batches(loader)

    def step(batch) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(batch.images)
        loss = F.cross_entropy(logits.float(), batch.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    model.train()
    for _ in range(warmup):  # cudnn autotuning, allocator growth, lazy inits
        step(next(stream))
    clock.sync()
    start = clock.mark()
    for _ in range(steps):
        loss = step(next(stream))
    stop = clock.mark()
    clock.sync()
    seconds = clock.seconds(start, stop)
    float(loss.detach())  # noqa: B018
    batch_size = spec.train.global_batch_size

    split = {"loader": 0.0, "forward_backward": 0.0, "optimizer": 0.0, "logging": 0.0}
    for _ in range(steps):
        clock.sync()
        t0 = time.perf_counter()
        batch = next(stream)
        clock.sync()
        split["loader"] += time.perf_counter() - t0
        a = clock.mark()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(batch.images)
        loss = F.cross_entropy(logits.float(), batch.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        b = clock.mark()
        opt.step()
        c = clock.mark()
        clock.sync()
        split["forward_backward"] += clock.seconds(a, b)
        split["optimizer"] += clock.seconds(b, c)
        t1 = time.perf_counter()
        # What a log step does: loss and accuracy back to the host (a sync, then Python floats).
        _ = (float(loss.detach()), float((logits.argmax(1) == batch.labels).float().mean()))
        split["logging"] += time.perf_counter() - t1
    step_ms = {k: round(1000 * v / steps, 3) for k, v in split.items()}
    return {"spec": spec_path, "model": spec.model.name, "batch_size": batch_size,
            "amp": str(amp).replace("torch.", ""), "channels_last": spec.model.channels_last,
            "warmup_steps": warmup, "steps": steps, "images_per_s": round(steps * batch_size / seconds, 1),
            "step_ms": round(1000 * seconds / steps, 3), "split_step_ms": step_ms}


def measure_loader(kind: str, data: Path, device, tiny: bool) -> dict[str, Any]:
    """Batches/s of the train loader alone (airbench's augmentation), to the device, after one warm-up pass."""
    from ddpcifar.data.config import AugmentConfig, DataConfig
    from ddpcifar.data.loaders import build_loader
    from ddpcifar.data.meta import load_meta

    meta = load_meta(data)
    batch_size = 16 if tiny else 1024
    loader = build_loader(DataConfig(dir=data, loader=kind, num_workers=1 if tiny else 8),
                          AugmentConfig(kind="basic", flip_p=0.5, translate=2, cutout=0),
                          split="train", batch_size=batch_size, train=True, rank=0, world_size=1, seed=0,
                          device=device, mean=meta.mean, std=meta.std)
    clock = Clock(device)
    for _ in loader:  # warm-up epoch (FFCV compiles its pipeline here)
        pass
    loader.set_epoch(1)
    clock.sync()
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch.labels.numel()
    clock.sync()
    seconds = time.perf_counter() - t0
    return {"loader": kind, "batch_size": batch_size, "images": n,
            "images_per_s": round(n / seconds, 1), "seconds": round(seconds, 3)}


def recipe_timing(check: Check, data: Path) -> None:
    """airbench94's step loop first, then its compiled step against eager."""
    import torch

    models = check.result.setdefault("models", {})
    spec = MODELS["airbench94"]
    if not (ROOT / spec).is_file():
        check.skip("measure airbench94", f"{spec} not present")
        return
    guarded(check, "measure airbench94", lambda: models.__setitem__(
        "airbench94", measure_model("airbench94", spec, data, torch.device(check.device),
                                    check.tiny)))
    if "airbench94" in models:
        check.say(f"airbench94: {models['airbench94']['images_per_s']:,.0f} images/s, "
                  f"split {models['airbench94']['split_step_ms']}")
    compiled_step(check, spec)


def compiled_step(check: Check, spec: str) -> None:
    """benchmarks/compile_bench.py on the recipe's step: eager against torch.compile."""
    out = check.out / "compile_bench.json"
    sizes = (["--batch", "16", "--eval-batch", "16", "--set", "train.amp=off", "--backend",
              "aot_eager", "--steps", "1", "--warmup", "0", "--eval-steps", "1", "--rounds", "1"]
             if check.tiny else ["--steps", "10", "--rounds", "2"])
    cmd = [sys.executable, "benchmarks/compile_bench.py", "--spec", spec, "--device", check.device,
           "--variants", "eager", "default", *sizes, "--out", str(out)]
    if not check.time_left(60 if check.tiny else 150):
        check.skip("compiled step", "time budget")
        return
    proc = check.run("compiled step", cmd, timeout_s=90 if check.tiny else 240)
    if proc is None or not out.is_file():
        return
    rows = {r["variant"]: r for r in json.loads(out.read_text())["records"]}
    check.result["compiled_step"] = {
        name: {k: row.get(k) for k in ("images_per_s", "step_ms", "split_ms", "compile_s",
                                        "eval_images_per_s", "speedup_vs_eager", "backend")}
        for name, row in rows.items()}
    compiled = rows.get("default", {})
    check.say(f"compiled step: {compiled.get('speedup_vs_eager')}x eager, compile "
              f"{compiled.get('compile_s')} s")


def timings(check: Check, data: Path, ffcv: bool) -> None:
    import torch

    device = torch.device(check.device)
    models: dict[str, Any] = check.result.setdefault("models", {})
    for name, spec in MODELS.items():
        if name in models:  # measured first (recipe_timing)
            continue
        if not (ROOT / spec).is_file():
            check.skip(f"measure {name}", f"{spec} not present")
            continue
        if not check.time_left(20 if check.tiny else 40):
            check.skip(f"measure {name}", "time budget")
            continue
        guarded(check, f"measure {name}", lambda n=name, s=spec: models.__setitem__(
            n, measure_model(n, s, data, device, check.tiny)))
        if name in models:
            check.say(f"{name}: {models[name]['images_per_s']:,.0f} images/s, split {models[name]['split_step_ms']}")
    loaders: dict[str, Any] = {}
    for kind in ("memory", "ffcv"):
        if kind == "ffcv" and not ffcv:
            check.skip("measure loader ffcv", "FFCV unavailable")
            continue
        guarded(check, f"measure loader {kind}", lambda k=kind: loaders.__setitem__(
            k, measure_loader(k, data, device, check.tiny)))
    check.result["loaders"] = loaders


def guarded(check: Check, step: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as err:  # recorded, and the check goes on
        check.fail(step, f"{type(err).__name__}: {err}")


def projection(check: Check) -> None:
    """airbench94's 9.9 epochs of 50,000 images at the measured rates (training steps only)."""
    out: dict[str, Any] = {"epochs": AIRBENCH94_EPOCHS, "train_images": CIFAR10_TRAIN}
    run = next((r for r in check.result.get("train_runs", []) if r["name"].startswith("airbench94")
                and r.get("images_per_s")), None)
    if run:
        out["from_torchrun_images_per_s"] = run["images_per_s"]
        out["projected_s_torchrun"] = round(AIRBENCH94_EPOCHS * CIFAR10_TRAIN / run["images_per_s"], 2)
    model = check.result.get("models", {}).get("airbench94")
    if model:
        out["from_step_loop_images_per_s"] = model["images_per_s"]
        out["projected_s_step_loop"] = round(AIRBENCH94_EPOCHS * CIFAR10_TRAIN / model["images_per_s"], 2)
    if len(out) == 2:
        check.skip("airbench94 projection", "no airbench94 measurement")
    check.result["airbench94_projection"] = out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (gpu_check.json)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU dry run)")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="optional steps are skipped once they would pass this (default 330)")
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest -m gpu")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here (use --device cpu --tiny for the dry run)",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, args.device, args.tiny, args.budget_s)
    env = environment(args.device)
    check.result.update(environment=env, tiny=args.tiny, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    check.say(f"environment: {json.dumps(env)}")
    if not env["ffcv"]:
        check.say("FFCV unavailable: skipped FFCV loader checks")
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    try:
        data = prepare_data(check, work)
        if data is not None:
            recipe_timing(check, data)  # first: what the check is for, before any budget runs out
        if args.skip_tests:
            check.skip("pytest -m gpu", "--skip-tests")
        else:
            run_gpu_tests(check, env["ffcv"])
        if data is not None:
            runs = train_matrix(check, data, work, env["ffcv"])
            check.result["train_runs"] = runs
            done = next((r for r in runs if r.get("ok")), runs[0] if runs else None)
            if done:
                evaluate_run(check, done, data)
            timings(check, data, env["ffcv"])
            projection(check)
    finally:
        check.result["elapsed_s"] = round(check.elapsed(), 1)
        check.result["environment"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
        check.result["ok"] = not check.result["failures"]
        (args.out / "gpu_check.json").write_text(json.dumps(check.result, indent=2) + "\n")
        shutil.rmtree(work, ignore_errors=True)
    check.say(f"wrote {args.out / 'gpu_check.json'}: {len(check.result['failures'])} failure(s), "
              f"{len(check.result['skipped'])} skipped step(s)")
    return 0 if check.result["ok"] else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # ddpcifar importable when run as a script
    sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/provenance.py
    raise SystemExit(main())
