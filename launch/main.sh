#!/usr/bin/env bash
# The main job, end to end: install (launch/setup.sh), prepare CIFAR-10 as FFCV betons, train with
# torchrun, then evaluate the best checkpoint. Arguments after the script go to ddpcifar.train.
#
#   CIFAR10_SOURCE  a local copy for data_prep.py --source: cifar-10-python.tar.gz, a directory
#                   holding cifar-10-batches-py, or an image-folder tree (train/<class>/*.jpg,
#                   test/<class>/*). Unset: download the official archive (needs internet).
#   DATA_DIR        prepared data directory (default data/cifar10; reused when already prepared)
#   SPEC            run spec (default specs/era_s9.json)
#   NPROC           processes on this machine (default 2)
#   RUN_NAME        run directory name under runs/ (default: <spec name>-<date>-<time>)
#
# Example: CIFAR10_SOURCE=../shared/data/cifar10-jpeg bash launch/main.sh --set train.epochs=2
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash launch/setup.sh
VENV="${DDPCIFAR_VENV:-.venv}"
PY="$VENV/bin/python"
DATA_DIR="${DATA_DIR:-data/cifar10}"
SPEC="${SPEC:-specs/era_s9.json}"
NPROC="${NPROC:-2}"
RUN_NAME="${RUN_NAME:-$(basename "$SPEC" .json)-$(date +%Y%m%d-%H%M%S)}"

if [[ -f "$DATA_DIR/meta.json" ]]; then
    echo "main: using the prepared data in $DATA_DIR"
else
    "$PY" data_prep.py ${CIFAR10_SOURCE:+--source "$CIFAR10_SOURCE"} --out "$DATA_DIR"
fi

# The run name is chosen here, once, and handed to every rank (per-rank timestamps diverge).
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
"$VENV/bin/torchrun" --standalone --nproc_per_node="$NPROC" -m ddpcifar.train "$SPEC" \
    --set "data.dir=$DATA_DIR" --set "logging.run_name=$RUN_NAME" "$@"

RUNS_DIR="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["logging"]["runs_dir"])' "$SPEC")"
for arg in "$@"; do [[ "$arg" == logging.runs_dir=* ]] && RUNS_DIR="${arg#logging.runs_dir=}"; done
"$PY" -m ddpcifar.evaluate "$RUNS_DIR/$RUN_NAME/checkpoints/best.pt" --data "$DATA_DIR"
echo "main: run directory $RUNS_DIR/$RUN_NAME (model card: $RUNS_DIR/$RUN_NAME/MODEL_CARD.md); watch and steer runs with: $PY -m tui --runs $RUNS_DIR"
