#!/usr/bin/env bash
# Short real-data runs of every model variant through the documented torchrun command
# (torchrun, 4 ranks), then a table of epochs, test top-1, wall time and images/s.
#
#   bash benchmarks/real_runs.sh [RUNS_DIR]        (default runs/real; needs data/cifar10)
#   EPOCHS="era_s9=3 net5fc=3" bash benchmarks/real_runs.sh   to choose the variants/epochs
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS="${1:-runs/real}"
NPROC="${NPROC:-4}"
EPOCHS="${EPOCHS:-era_s9=3 net5fc=3 vgg8bn=2 resnet9=1 airbench=3}"
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
for pair in $EPOCHS; do
    model="${pair%%=*}"; epochs="${pair#*=}"
    name="$model-e$epochs-n$NPROC"
    # A live run holds a flock on .lock (docs/run_directory.md): never delete it.
    if [ -e "$RUNS/$name/.lock" ] && ! flock -n "$RUNS/$name/.lock" true; then
        echo "error: $RUNS/$name is in use by a running training" >&2; exit 1
    fi
    rm -rf "${RUNS:?}/$name"
    echo "== $model: .venv/bin/torchrun --standalone --nproc_per_node=$NPROC -m ddpcifar.train specs/$model.json --set train.epochs=$epochs --set logging.runs_dir=$RUNS --set logging.run_name=$name"
    SECONDS=0
    .venv/bin/torchrun --standalone --nproc_per_node="$NPROC" -m ddpcifar.train "specs/$model.json" \
        --set "train.epochs=$epochs" --set "logging.runs_dir=$RUNS" --set "logging.run_name=$name" \
        --set logging.progress=false 2>&1 | grep -E "^epoch|parameters|rror" || true
    echo "$name wall ${SECONDS} s (command, including start-up), load $(cut -d' ' -f1-3 /proc/loadavg)"
done
.venv/bin/python - "$RUNS" <<'PY'
import json, sys
from pathlib import Path
print(f"{'run':<22}{'epochs':>7}{'top1':>8}{'best':>8}{'train s':>9}{'img/s':>8}")
for run in sorted(Path(sys.argv[1]).iterdir()):
    s = json.loads((run / "summary.json").read_text())
    print(f"{run.name:<22}{s['epochs']:>7}{s['final']['top1']:>8.2%}{s['best']['top1']:>8.2%}"
          f"{s['train_time_s']:>9.0f}{s['images_per_s']:>8.0f}")
PY
