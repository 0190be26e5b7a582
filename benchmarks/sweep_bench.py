"""Measurements of sweeps: a finished sweep's report, its best parameters retrained against the
unchanged spec, and workers against threads in trials per hour.

    python benchmarks/sweep_bench.py report runs/sweep_airbench94 --out benchmarks/results/sweep_airbench94.json
    python benchmarks/sweep_bench.py retrain runs/sweep_airbench94 --seeds 0 1 --out benchmarks/results/sweep_airbench94_retrain.json
    python benchmarks/sweep_bench.py throughput --trials 4 --epochs 1 --out benchmarks/results/sweep_throughput.json

`report`: the trials (parameters, validation objective, test top-1), importances, the compute
pruning saved (trial-epochs run against the same trials unpruned), and what the sweep machinery
itself cost each trial (ask to launch, last exit to tell, worker CPU) against the trial's
training time. `retrain`: the unchanged base spec and the base spec with the best trial's
parameters, each trained on the full train split (no validation split) with the same epochs and
seeds, through the ordinary torchrun command; their test accuracy is what the sweep never saw.
`throughput`: the same small sweep twice in one invocation, two workers of 1 rank x 1 thread
(two slots) against one worker of 1 rank x 2 threads; trials per hour of each.
Every record carries the CPU model, the load average before and after, and its command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddpcifar.atomic import write_json  # noqa: E402
from ddpcifar.runs.reader import load_summary  # noqa: E402


def context() -> dict[str, Any]:
    """Where and when a record was measured."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()],
            "commit": commit, "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def report(sweep_dir: Path) -> dict[str, Any]:
    from ddpcifar.sweep.show import best_trial, importances, load_sweep_dir, trial_rows

    sweep, record, study = load_sweep_dir(sweep_dir)
    rows = trial_rows(sweep, study)
    epochs = int(float(json.loads((Path(rows[0]["runs"][0]) / "spec.json").read_text())
                       ["train"]["epochs"]) + 0.999) if rows and rows[0]["runs"] else 0
    counted = [r for r in rows if r["state"] in ("complete", "pruned")]
    run_epochs = sum(r["epochs"] for r in counted)
    unpruned = len(counted) * epochs * len(sweep.seeds)
    machinery = []
    for t in study.get_trials(deepcopy=False):
        m = t.user_attrs.get("machinery")
        runs = t.user_attrs.get("runs") or []
        train = sum((load_summary(r) or {}).get("train_time_s") or 0.0 for r in runs)
        if m and m.get("ask_to_launch_s") is not None and m.get("exit_to_tell_s") is not None:
            cost = m["ask_to_launch_s"] + m["exit_to_tell_s"]
            machinery.append({"trial": t.number, "state": t.state.name.lower(), **m,
                              "train_time_s": round(train, 2),
                              "share": round(cost / train, 6) if train else None})
    complete = [m for m in machinery if m["state"] == "complete" and m["share"] is not None]
    best = best_trial(study)
    return {
        "sweep": sweep.name, "objective": sweep.objective.metric, "trials": rows,
        "best": None if best is None else {"number": best.number, "params": best.params,
                                           "value": best.value,
                                           "test_top1": best.user_attrs.get("test_top1")},
        "importances": importances(study),
        "pruning": {"trial_epochs_run": run_epochs, "trial_epochs_unpruned": unpruned,
                    "saved": round(1 - run_epochs / unpruned, 4) if unpruned else None,
                    "pruned": sum(r["state"] == "pruned" for r in rows),
                    "complete": sum(r["state"] == "complete" for r in rows),
                    "failed": sum(r["state"] == "fail" for r in rows)},
        "machinery": {"per_trial": machinery,
                      "median_ask_to_launch_s": _median([m["ask_to_launch_s"] for m in machinery]),
                      "median_exit_to_tell_s": _median([m["exit_to_tell_s"] for m in machinery]),
                      "median_worker_cpu_s": _median([m["worker_cpu_s"] for m in machinery]),
                      "max_share_of_training": max((m["share"] for m in complete), default=None),
                      "median_share_of_training": _median([m["share"] for m in complete])},
        "source": record.get("source"), "context": context(),
    }


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 6) if values else None


def _train(spec: str, overrides: list[str], name: str, runs: Path) -> dict[str, Any]:
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=1", "-m", "ddpcifar.train", spec]
    for o in [*overrides, f"logging.runs_dir={runs}", f"logging.run_name={name}",
              "logging.progress=false"]:
        cmd += ["--set", o]
    before = context()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    summary = load_summary(runs / name) or {}
    final = summary.get("final") or {}
    return {"name": name, "command": " ".join(cmd), "top1": final.get("top1"),
            "top1_tta": final.get("top1_tta"), "wall_s": round(wall, 1),
            "time_to_accuracy_s": (summary.get("timing") or {}).get("time_to_accuracy_s"),
            "context_before": before, "load_after": context()["load"]}


def retrain(sweep_dir: Path, seeds: list[int], runs: Path) -> dict[str, Any]:
    from ddpcifar.sweep.show import best_trial, load_sweep_dir

    sweep, record, study = load_sweep_dir(sweep_dir)
    best = best_trial(study)
    if best is None:
        raise SystemExit("no complete trial to retrain")
    base = [*sweep.base.overrides, "data.val_size=0"]
    tuned = [*base, *(f"{k}={json.dumps(v)}" for k, v in best.params.items())]
    records = []
    for seed in seeds:  # interleaved: base, tuned, base, tuned
        for label, overrides in (("unchanged", base), ("tuned", tuned)):
            name = f"retrain-{sweep.name}-{label}-s{seed}-{int(time.time())}"
            rec = _train(str(sweep.base.spec), [*overrides, f"train.seed={seed}"], name, runs)
            records.append({"label": label, "seed": seed, **rec})
            print(f"{label} seed {seed}: top1 {rec['top1']:.4f} "
                  f"tta {rec['top1_tta'] or float('nan'):.4f} ({rec['wall_s']:.0f} s)", flush=True)

    def mean(label: str, key: str) -> float | None:
        vals = [r[key] for r in records if r["label"] == label and r[key] is not None]
        return round(statistics.mean(vals), 5) if vals else None

    return {"sweep": sweep.name, "best_trial": best.number, "best_params": best.params,
            "records": records,
            "means": {label: {"top1": mean(label, "top1"), "top1_tta": mean(label, "top1_tta")}
                      for label in ("unchanged", "tuned")}}


def throughput(trials: int, epochs: float, spec: str, runs: Path) -> dict[str, Any]:
    """Two workers x 1 thread (2 slots) against one worker x 2 threads, back to back."""
    results = []
    for label, workers, threads in (("2 workers x 1 rank x 1 thread", 2, 1),
                                    ("1 worker x 1 rank x 2 threads", 1, None)):
        name = f"bench-tph-w{workers}-{int(time.time())}"
        sweep = {"name": name, "runs_dir": str(runs),
                 "base": {"spec": spec, "overrides": [f"train.epochs={epochs}",
                                                      "eval.tta=0", "logging.tensorboard=false"]},
                 "space": {"optimizer.lr": {"type": "float", "low": 6, "high": 18, "log": True}},
                 "trials": trials, "sampler": {"kind": "random", "seed": 0},
                 "pruner": {"kind": "none"}, "threads": threads}
        path = runs / f"{name}.json"
        runs.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(sweep))
        subprocess.run([sys.executable, "-m", "ddpcifar.runs", "queue", "slots", str(workers),
                        "--runs", str(runs)], cwd=ROOT, check=True, capture_output=True)
        before = context()
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "ddpcifar.sweep", "run", str(path), "--workers",
               str(workers)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{label} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        results.append({"label": label, "workers": workers, "threads_per_rank": threads or 2,
                        "trials": trials, "epochs": epochs, "wall_s": round(wall, 1),
                        "trials_per_hour": round(trials / wall * 3600, 2), "command": " ".join(cmd),
                        "context_before": before, "load_after": context()["load"]})
        print(f"{label}: {trials} trials in {wall:.0f} s = "
              f"{results[-1]['trials_per_hour']:.1f} trials/h", flush=True)
    return {"records": results,
            "ratio_two_workers_over_one": round(results[0]["trials_per_hour"]
                                                / results[1]["trials_per_hour"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report")
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("retrain")
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--spec", default="specs/airbench94.json")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "report":
        out = report(args.sweep_dir)
    elif args.command == "retrain":
        out = retrain(args.sweep_dir, args.seeds, args.runs)
    else:
        out = throughput(args.trials, args.epochs, args.spec, args.runs)
    out["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)
    print(json.dumps({k: v for k, v in out.items() if k not in ("trials", "records")},
                     indent=1, default=str)[:3000])


if __name__ == "__main__":
    main()
