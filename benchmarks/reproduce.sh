#!/usr/bin/env bash
# Reproduce the four original projects' published results through the ordinary commands:
# the torch models with `torchrun --standalone --nproc_per_node=2 -m ddpcifar.train`, the NumPy CNN
# with `python -m ddpcifar.train` (one process). For each run it then
#   - checks that `python -m ddpcifar.evaluate` on the best checkpoint reproduces summary.json,
#   - exports the charts (`python -m tui export`) into docs/img/<model>/,
# and finally writes a results table (markdown and JSON) of every finished run under RUNS, from this
# invocation or an earlier one, to RUNS/results.md and RUNS/results.json.
#
#   bash benchmarks/reproduce.sh                      all four, runs under runs/repro
#   bash benchmarks/reproduce.sh era_s9 scratch_cnn   a subset (names of specs/<name>_repro.json)
#   RUNS=runs/other IMG=/tmp/img bash benchmarks/reproduce.sh
#
# A run whose summary.json exists is not trained again; one with a checkpoint but no summary
# (interrupted) continues with --resume. Run it alone on the machine: its times are measurements.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
RUNS="${RUNS:-runs/repro}"
IMG="${IMG:-docs/img}"
DATA="${DATA:-data/cifar10}"
NPROC="${NPROC:-2}"
if [ "$#" -gt 0 ]; then MODELS=("$@"); else MODELS=(era_s9 net5fc vgg8bn scratch_cnn); fi
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1

for model in "${MODELS[@]}"; do
    spec="specs/${model}_repro.json"
    [ -f "$spec" ] || { echo "error: no spec $spec" >&2; exit 2; }
done
[ -f "$DATA/train.beton" ] || { echo "error: no prepared data in $DATA (run data_prep.py)" >&2; exit 2; }
mkdir -p "$RUNS"

for model in "${MODELS[@]}"; do
    spec="specs/${model}_repro.json"
    name="${model}_repro"
    dir="$RUNS/$name"
    overrides=(--set "logging.runs_dir=$RUNS" --set "logging.run_name=$name"
               --set "data.dir=$DATA" --set logging.progress=false)
    if [ "$model" = scratch_cnn ]; then
        cmd=("$PY" -m ddpcifar.train "$spec" "${overrides[@]}")
        checkpoint="$dir/checkpoints/scratch_best.npz"
    else
        cmd=(.venv/bin/torchrun --standalone "--nproc_per_node=$NPROC" -m ddpcifar.train "$spec"
             "${overrides[@]}")
        checkpoint="$dir/checkpoints/best.pt"
    fi
    if [ -f "$dir/summary.json" ]; then
        echo "== $name: summary.json exists, not trained again"
    else
        if [ -d "$dir/checkpoints" ] && [ "$model" != scratch_cnn ]; then
            cmd+=(--resume)
        elif [ -d "$dir" ]; then
            # A live run holds a flock on .lock (docs/run_directory.md): never delete it.
            if [ -e "$dir/.lock" ] && ! flock -n "$dir/.lock" true; then
                echo "error: $dir is in use by a running training" >&2; exit 1
            fi
            rm -rf "${dir:?}"
        fi
        echo "== $name: ${cmd[*]}"
        load_before=$(cut -d' ' -f1-3 /proc/loadavg)
        start=$(date +%s)
        "${cmd[@]}" 2>&1 | grep -E "^epoch|parameters|rror" || true
        [ -f "$dir/summary.json" ] || { echo "error: $name wrote no summary.json" >&2; exit 1; }
        printf '{"command": "%s", "wall_s": %d, "load_before": "%s", "load_after": "%s"}\n' \
            "${cmd[*]}" "$(( $(date +%s) - start ))" "$load_before" \
            "$(cut -d' ' -f1-3 /proc/loadavg)" > "$dir/reproduce.json.tmp"
        mv "$dir/reproduce.json.tmp" "$dir/reproduce.json"
    fi
    echo "-- $name: evaluate $checkpoint"
    "$PY" -m ddpcifar.evaluate "$checkpoint" --data "$DATA" --json > "$dir/evaluate.json.tmp"
    mv "$dir/evaluate.json.tmp" "$dir/evaluate.json"
    "$PY" -m tui export "$dir" --out "$IMG/$model"
    # Small files for the repository: the same pixels in a 256-colour palette.
    "$PY" -c 'import os, sys; from PIL import Image
for p in sys.argv[1:]:
    Image.open(p).convert("RGB").quantize(256).save(p + ".tmp", "PNG", optimize=True)
    os.replace(p + ".tmp", p)' "$IMG/$model"/*.png
done

"$PY" benchmarks/repro_table.py "$RUNS"
