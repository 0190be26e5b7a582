"""Time to accuracy: a spec through the real torchrun command, beside the plain PyTorch script.

For each seed it runs, one after the other on the same machine,
  ddpcifar:  torchrun --standalone --nproc_per_node=N -m ddpcifar.train SPEC --set train.seed=S
  plain:     python benchmarks/airbench_plain.py --recipe SPEC_NAME --seed S  (1 process, all cores)
and reads each run's final top-1 (with TTA) and its time under airbench's convention
(whitening + training steps + the final TTA evaluation; start-up, data loading, compilation
and the per-epoch evaluations excluded; a compiled run's compile time is its record's
compile_s). A run of 9.9 epochs takes tens of minutes on a 2-core CPU, so the parts can run
in separate invocations and be merged:

    python benchmarks/time_to_accuracy.py run --part ddpcifar --nproc 1 --seeds 0 1 2 --out a.json
    python benchmarks/time_to_accuracy.py run --part plain --seeds 0 1 --out b.json
    python benchmarks/time_to_accuracy.py run --part both --nproc 1 --seeds 0 --out c.json  # interleaved
    python benchmarks/time_to_accuracy.py merge a.json b.json c.json --out merged.json
    # any spec against the plain script's published recipe, with the levers of each side:
    python benchmarks/time_to_accuracy.py run --part both --spec specs/airbench94_muon_fast.json \
        --plain-recipe airbench94 --seeds 0 1 --out d.json
    python benchmarks/time_to_accuracy.py run --part both --set model.compile=true \
        --plain-compile --seeds 0 --out e.json  # compiled against compiled

Each record carries its own machine (CPU model, cores, torch; per record, so a merged file
cannot mislabel one), the commit, the command, the load average before and after, the thread
settings and an id of its invocation. Beside the means, run and merge report the side-by-side
pairs: a 1-rank ddpcifar run and the plain script of the same seed from one `--part both`
invocation, whose time ratio compares the two under the same machine conditions (means over
separate invocations mix different days, and different machines, in).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ddpcifar.runs.reader import load_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/provenance.py, also when imported
from provenance import commit, load_average, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_ddpcifar(spec: str, nproc: int, seed: int, data: str, runs: Path, extra: list[str],
                 variant: str = "") -> dict:
    name = f"tta-{Path(spec).stem}-n{nproc}-s{seed}-{int(time.time())}"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "ddpcifar.train", spec,
           "--set", f"train.seed={seed}", "--set", f"data.dir={data}",
           "--set", f"logging.runs_dir={runs}", "--set", f"logging.run_name={name}",
           "--set", "logging.progress=false", *extra]
    # torchrun gives each of several ranks one thread (OMP_NUM_THREADS=1); one rank keeps all cores.
    record = _timed(cmd)
    summary = load_summary(runs / name)
    final = summary["final"]
    resolved = json.loads((runs / name / "spec.json").read_text())
    compiled = resolved["model"].get("compile", False)
    record.update(part="ddpcifar", nproc=nproc, seed=seed, spec=spec, run_dir=str(runs / name),
                  variant=variant, compile=None if compiled is False else compiled,
                  top1=final["top1"], top1_tta=final.get("top1_tta"),
                  tta_images=final.get("tta_images"),
                  time_s=summary["timing"]["time_to_accuracy_s"], timing=summary["timing"],
                  compile_s=summary["timing"].get("compile_s"),
                  images_per_s=summary["images_per_s"], epochs=summary["epochs"],
                  threads_per_rank=os.cpu_count() if nproc == 1 else 1)
    return record


def run_plain(recipe: str, seed: int, data: str, extra: list[str], variant: str = "") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plain.json"
        cmd = [sys.executable, str(ROOT / "benchmarks" / "airbench_plain.py"), "--recipe", recipe,
               "--data", data, "--seed", str(seed), "--out", str(out), *extra]
        record = _timed(cmd)
        result = json.loads(out.read_text())
    record.update(part="plain", recipe=recipe, nproc=1, seed=seed, variant=variant,
                  compile=result.get("compile"), compile_s=result.get("compile_s"),
                  top1=result["top1"], top1_tta=result["top1_tta"],
                  tta_images=result.get("tta_images"),
                  time_s=result["time_to_accuracy_s"], images_per_s=result["images_per_s"],
                  epochs=result["epochs"], threads_per_rank=result["threads"],
                  timing={k: result[k] for k in ("whitening_s", "train_s", "final_eval_s")})
    return record


def _timed(cmd: list[str]) -> dict:
    """Run `cmd`; the record of where and how: machine, commit, command, load, times."""
    before = load_average()
    t0 = time.perf_counter()
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    shown = " ".join(os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c for c in cmd)
    return {"command": shown, "machine": machine(), "commit": commit(),
            "wall_s": round(time.perf_counter() - t0, 1),
            "load_before": before, "load_after": load_average(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


PLAIN_RECIPES = ("airbench94", "airbench94_muon")  # what benchmarks/airbench_plain.py trains


def recipe_length(record: dict) -> str:
    """The recipe and its length, e.g. `airbench94-e9.9`: what a ddpcifar run and a plain one share."""
    recipe = (Path(record["spec"]).stem if record["part"] == "ddpcifar"
              else record.get("recipe", PLAIN_RECIPES[0]))
    return f"{recipe}-e{record['epochs']:g}"


def cpu_of(record: dict) -> str | None:
    return (record.get("machine") or {}).get("cpu")


def setting(record: dict) -> str:
    """The recipe and length, and the options a run added to it (`[...]`): what a group shares."""
    variant = record.get("variant") or ""
    return recipe_length(record) + (f"[{variant}]" if variant else "")


def group_key(record: dict, cpu_tag: bool = False) -> str:
    """Runs that may be averaged together: the same part, recipe, length, options and number of
    ranks, and the same CPU (named when `cpu_tag`: the records come from several)."""
    cpu = f"@{cpu_of(record) or 'unknown CPU'}" if cpu_tag else ""
    return f"{record['part']}-{setting(record)}-n{record['nproc']}{cpu}"


def summarise(records: list[dict]) -> dict:
    """mean and std of top1_tta and time per group (`group_key`), and the ratios to the plain
    script's group of the same recipe, length, compile setting and CPU, and of 2 ranks to 1.

    Records from several CPUs are grouped per CPU and never compared across CPUs."""
    cpu_tag = len({cpu_of(r) for r in records}) > 1
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(group_key(r, cpu_tag), []).append(r)
    table = {}
    for key, rs in sorted(groups.items()):
        acc = [r["top1_tta"] for r in rs]
        secs = [r["time_s"] for r in rs]
        table[key] = {"runs": len(rs), "seeds": sorted(r["seed"] for r in rs),
                      "cpu": sorted({cpu_of(r) or "unknown" for r in rs})[0],
                      "top1_tta_mean": statistics.mean(acc),
                      "top1_tta_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                      "top1_mean": statistics.mean(r["top1"] for r in rs),
                      "time_s_mean": statistics.mean(secs),
                      "images_per_s_mean": statistics.mean(r["images_per_s"] for r in rs)}
    first = {key: rs[0] for key, rs in groups.items()}
    for key, row in table.items():
        r = first[key]
        if r["part"] != "ddpcifar":
            continue
        # The plain script of the same recipe and length, compiled or eager alike, same CPU.
        plain = [k for k, p in first.items() if p["part"] == "plain"
                 and recipe_length(p) == recipe_length(r) and bool(p.get("compile"))
                 == bool(r.get("compile")) and cpu_of(p) == cpu_of(r)]
        if len(plain) == 1:
            row["time_ratio_vs_plain"] = row["time_s_mean"] / table[plain[0]]["time_s_mean"]
            row["top1_tta_minus_plain"] = row["top1_tta_mean"] - table[plain[0]]["top1_tta_mean"]
        one_rank = table.get(key.replace(f"-n{r['nproc']}", "-n1", 1) if r["nproc"] != 1 else "")
        if one_rank:
            row["throughput_vs_n1"] = row["images_per_s_mean"] / one_rank["images_per_s_mean"]
    return table


def paired(records: list[dict]) -> dict:
    """Side-by-side pairs: a 1-rank ddpcifar run and the plain script of the same seed from one
    invocation (`run --part both` runs them one after the other, so a slow spell of the machine
    hits both). Labelled by the recipe and length when both ran the same one as published,
    else `SPEC-eN[options] vs plain RECIPE-eM[options]` (a faster spec against the published
    recipe); per CPU when the records come from several. Per label: each pair's time ratio and
    accuracy difference, and their means. Runs from different invocations are never paired:
    their ratio would mix the machine's speed on different days with the framework's."""
    sides: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for r in records:
        if r["nproc"] != 1 or r.get("invocation") is None:
            continue
        sides.setdefault((r["invocation"], r["seed"]), {}).setdefault(r["part"], []).append(r)
    cpu_tag = len({cpu_of(r) for r in records}) > 1
    out: dict[str, dict] = {}
    for (invocation, seed), side in sorted(sides.items()):
        for ddp in side.get("ddpcifar", []):
            for plain in side.get("plain", []):
                if (recipe_length(ddp) == recipe_length(plain) and setting(ddp) == recipe_length(ddp)
                        and setting(plain) == recipe_length(plain)):
                    label = recipe_length(ddp)  # the same recipe, as both publish it
                else:
                    label = f"{setting(ddp)} vs plain {setting(plain)}"
                if cpu_tag:  # ratios of one CPU are not averaged with another's
                    label += f"@{cpu_of(ddp) or 'unknown CPU'}"
                row = out.setdefault(label, {"pairs": []})
                row["pairs"].append({"invocation": invocation, "seed": seed,
                                     "time_ratio": ddp["time_s"] / plain["time_s"],
                                     "top1_tta_minus_plain": ddp["top1_tta"] - plain["top1_tta"],
                                     "cpu": cpu_of(ddp)})
    for row in out.values():
        row["time_ratio_mean"] = statistics.mean(p["time_ratio"] for p in row["pairs"])
        row["top1_tta_minus_plain_mean"] = statistics.mean(p["top1_tta_minus_plain"]
                                                           for p in row["pairs"])
    return out


def print_table(table: dict) -> None:
    cpus = sorted({row["cpu"] for row in table.values()})
    print(f"CPU: {', '.join(cpus)}" + (" (groups apart per CPU)" if len(cpus) > 1 else ""))
    width = max([len("run"), *map(len, table)])
    print(f"{'run':{width}} {'n':>2} {'top1 TTA':>16} {'top1':>7} {'time s':>8} {'img/s':>7} "
          f"{'vs plain':>8} {'vs n1':>6}")
    for key, row in table.items():
        ratio, scaling = row.get("time_ratio_vs_plain"), row.get("throughput_vs_n1")
        print(f"{key:{width}} {row['runs']:>2} {row['top1_tta_mean']:>8.2%} ± {row['top1_tta_std']:.2%} "
              f"{row['top1_mean']:>7.2%} {row['time_s_mean']:>8.1f} {row['images_per_s_mean']:>7.0f} "
              f"{'' if ratio is None else f'{ratio:.3f}':>8} {'' if scaling is None else f'{scaling:.3f}':>6}")


def print_pairs(pairs: dict) -> None:
    for recipe, row in pairs.items():
        each = ", ".join(f"seed {p['seed']} {p['time_ratio']:.3f}" for p in row["pairs"])
        print(f"side by side, ddpcifar 1 rank / plain, {recipe}: time ratio "
              f"{row['time_ratio_mean']:.3f} over {len(row['pairs'])} pair(s) ({each}); "
              f"top1 TTA {row['top1_tta_minus_plain_mean']:+.2%}")


def write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run seeds of ddpcifar, the plain script, or both interleaved")
    run.add_argument("--part", choices=("ddpcifar", "plain", "both"), default="both")
    run.add_argument("--spec", default="specs/airbench94.json")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="SECTION.KEY=VALUE", help="a spec override for the ddpcifar runs "
                     "(repeatable), e.g. model.compile=true or eval.tta_threshold=0.9")
    run.add_argument("--plain-recipe", choices=PLAIN_RECIPES,
                     help="the plain script's recipe (default: the spec's name, which must be one)")
    run.add_argument("--plain-compile", nargs="?", const="default", metavar="MODE",
                     help="the plain script with --compile [MODE]")
    run.add_argument("--plain-tta-threshold", type=float, metavar="P",
                     help="the plain script with selective TTA (--tta-threshold P)")
    run.add_argument("--nproc", type=int, nargs="+", default=[1], help="ranks for the ddpcifar runs")
    run.add_argument("--seeds", type=int, nargs="+", default=[0])
    run.add_argument("--data", default="data/cifar10")
    run.add_argument("--runs", type=Path, default=Path("runs/time_to_accuracy"))
    run.add_argument("--epochs", type=float, help="override the epochs (smoke runs; not the recipe)")
    run.add_argument("--out", type=Path, required=True)
    merge = sub.add_parser("merge", help="merge result files and print the table")
    merge.add_argument("inputs", type=Path, nargs="+")
    merge.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    if args.command == "merge":
        records = []
        for path in args.inputs:
            data = json.loads(path.read_text())
            records += [merged_record(r, path.name, data.get("machine")) for r in data["records"]]
        distinct = {json.dumps(r["machine"], sort_keys=True) for r in records if r.get("machine")}
        header = {"machines": [json.loads(m) for m in sorted(distinct)]}
    else:
        plain_recipe = args.plain_recipe or Path(args.spec).stem
        if args.part != "ddpcifar" and plain_recipe not in PLAIN_RECIPES:
            parser.error(f"the plain script has no recipe for {args.spec}: name one with "
                         f"--plain-recipe (allowed: {', '.join(PLAIN_RECIPES)})")
        args.runs.mkdir(parents=True, exist_ok=True)
        ddp_extra = [arg for o in args.overrides for arg in ("--set", o)]
        ddp_extra += ["--set", f"train.epochs={args.epochs}"] if args.epochs else []
        plain_options = ((["--compile", args.plain_compile] if args.plain_compile else [])
                         + (["--tta-threshold", str(args.plain_tta_threshold)]
                            if args.plain_tta_threshold is not None else []))
        plain_extra = plain_options + (["--epochs", str(args.epochs)] if args.epochs else [])
        records = []
        invocation = f"{time.strftime('%Y-%m-%dT%H:%M:%S')}-{os.getpid()}"
        for seed in args.seeds:  # interleaved: a slow spell of the machine hits both
            if args.part in ("ddpcifar", "both"):
                for nproc in args.nproc:
                    records.append(run_ddpcifar(args.spec, nproc, seed, args.data, args.runs,
                                                ddp_extra, variant=" ".join(args.overrides))
                                   | {"invocation": invocation})
            if args.part in ("plain", "both"):
                records.append(run_plain(plain_recipe, seed, args.data, plain_extra,
                                         variant=" ".join(plain_options))
                               | {"invocation": invocation})
            write(args.out, {"records": records})  # keep what is done
        header = {"machines": [machine()]}
    table, pairs = summarise(records), paired(records)
    write(args.out, {**header, "records": records, "summary": table, "paired": pairs})
    print_table(table)
    print_pairs(pairs)
    return 0


def merged_record(record: dict, file_name: str, file_machine: dict | None) -> dict:
    """A record as merge keeps it. Records written before runs carried an invocation id came one
    file per invocation (the file's name stands in); records written before each carried its
    machine get their file's, marked `machine_from_file`: a run file was stamped where it ran,
    but a file that was itself a merge was stamped with the merging machine (wrong for some)."""
    out = {"invocation": file_name} | record
    if "machine" not in out and file_machine:
        out |= {"machine": file_machine, "machine_from_file": file_name}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
