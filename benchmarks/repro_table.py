"""Results table of the reproduction runs (`benchmarks/reproduce.sh` calls this last).

For every finished run under RUNS (`<model>_repro/` with `summary.json` and `evaluate.json`, from
this invocation of reproduce.sh or an earlier one) it writes one row: the best checkpoint's
metrics, the command, its wall time and load average, and whether `python -m ddpcifar.evaluate`
on that checkpoint reproduced them. Writes RUNS/results.md and RUNS/results.json and prints the
table; exits 1 when an evaluation disagrees with its summary.

    python benchmarks/repro_table.py runs/repro
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ddpcifar.atomic import write_bytes, write_json
from ddpcifar.runs.reader import load_summary

MODELS = ("era_s9", "net5fc", "vgg8bn", "scratch_cnn")


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def row(run: Path, model: str) -> dict:
    """One table row for the run directory `run` of `model`."""
    summary = load_summary(run) or {}
    evaluated = _read(run / "evaluate.json")
    meta = _read(run / "reproduce.json")
    best = summary["best"]
    same = all(abs(evaluated[k] - best[k]) < 1e-6 for k in ("top1", "top5"))
    # The run computes TTA after its last epoch only; when the best checkpoint is an earlier
    # epoch, the evaluation of that checkpoint is where its TTA figure comes from.
    tta = best.get("top1_tta")
    if tta is None:
        tta = evaluated.get("top1_tta")
    return {"model": model, "parameters": summary["parameters"], "epochs": summary["epochs"],
            "best_epoch": best["epoch"], "top1": best["top1"], "top5": best["top5"],
            "top1_tta": tta, "final_top1": summary["final"]["top1"],
            "wall_s": meta.get("wall_s"), "train_s": summary["train_time_s"],
            "images_per_s": summary["images_per_s"], "load_before": meta.get("load_before"),
            "load_after": meta.get("load_after"), "command": meta.get("command"),
            "evaluate_reproduces_summary": same}


def markdown(rows: list[dict]) -> str:
    lines = ["| model | parameters | epochs | test top-1 (best epoch) | with TTA | test top-5 | "
             "wall time | training images/s | load average before / after | evaluate = summary |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tta = f"{r['top1_tta']:.2%}" if r["top1_tta"] is not None else "-"
        wall = f"{r['wall_s'] / 60:.1f} min" if r["wall_s"] else "-"
        lines.append(f"| `{r['model']}` | {r['parameters']:,} | {r['epochs']} | {r['top1']:.2%} "
                     f"({r['best_epoch']}) | {tta} | {r['top5']:.2%} | {wall} | "
                     f"{r['images_per_s']:.0f} | {r['load_before']} / {r['load_after']} | "
                     f"{'yes' if r['evaluate_reproduces_summary'] else 'NO'} |")
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in rows if r["command"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="directory holding the <model>_repro run directories")
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        print(f"error: no such directory: {args.runs}", file=sys.stderr)
        return 2
    rows = []
    for model in MODELS:
        run = args.runs / f"{model}_repro"
        if (run / "summary.json").exists() and (run / "evaluate.json").exists():
            try:
                rows.append(row(run, model))
            except (KeyError, TypeError, ValueError) as exc:
                print(f"error: {run}: unreadable results ({exc!r})", file=sys.stderr)
                return 2
    text = markdown(rows)
    write_bytes(args.runs / "results.md", text.encode())
    write_json(args.runs / "results.json", rows)
    print(text, end="")
    return 0 if all(r["evaluate_reproduces_summary"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
