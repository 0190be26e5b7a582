#!/usr/bin/env bash
# Prove the CUDA path in one call on a GPU machine, from the repository root, in under 6 minutes:
#     bash benchmarks/gpu_check.sh OUT [--wheels DIR] [--device cuda|cpu] [--tiny] [--budget-s S]
# 1. installs what the machine lacks (pydantic, textual, albumentations, pytest) from the wheels
#    that benchmarks/fetch_gpu_wheels.sh downloaded (pip --no-index: the machine has no internet);
# 2. runs benchmarks/gpu_check.py, most important first (the time budget skips the last steps):
#    a synthetic CIFAR-10-sized dataset, airbench94's step timing (the projection of its 9.9
#    epochs), its compiled step against eager (benchmarks/compile_bench.py, compile time
#    apart), pytest -m gpu, 2-epoch torchrun trainings (airbench94 and torch.compile first;
#    nccl; bf16/fp16; channels-last on/off; memory and FFCV loaders), ddpcifar.evaluate,
#    images/s of the other models, loader throughput and the step-time split.
# Writes OUT/gpu_check.json and OUT/gpu_check.log. FFCV has no wheel: where it cannot be imported
# the check says "FFCV unavailable: skipped FFCV loader checks" and runs the rest.
# Dry run on CPU (tests/test_gpu_check.py): bash benchmarks/gpu_check.sh OUT --device cpu --tiny
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT [--wheels DIR] [--device cuda|cpu] [--tiny] [--budget-s S]" >&2
    exit 2
fi
OUT=$1; shift
WHEELS=""
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS=$2; shift 2 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
PY=${PYTHON:-python3}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1
echo "[gpu_check] $(date -u +%FT%TZ) on $(hostname), python: $($PY -c 'import sys; print(sys.version.split()[0])')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

if [ -n "$WHEELS" ]; then
    if [ ! -d "$WHEELS" ]; then
        echo "[gpu_check] wheel folder not found: $WHEELS" >&2
        exit 2
    fi
    # Only what is missing; --no-index: nothing is fetched from the network. A system Python
    # (PEP 668) refuses plain installs: then again with --break-system-packages; if the resolver
    # still fails (an installed package pins something the folder lacks), every wheel --no-deps.
    WANT=(pydantic textual albumentations pytest pytest-timeout)
    PIP=("$PY" -m pip install --quiet --no-index --find-links "$WHEELS")
    "${PIP[@]}" "${WANT[@]}" \
        || "${PIP[@]}" --break-system-packages "${WANT[@]}" \
        || "${PIP[@]}" --break-system-packages --no-deps "$WHEELS"/*.whl \
        || echo "[gpu_check] FAILED: pip install from $WHEELS"
    $PY -c "import pydantic, textual, albumentations, pytest" \
        && echo "[gpu_check] wheels installed from $WHEELS" \
        || echo "[gpu_check] FAILED: pydantic/textual/albumentations/pytest not importable after the install"
fi
if ! $PY -c "import ddpcifar.data.ffcv_import" 2>/dev/null; then
    echo "[gpu_check] FFCV unavailable: skipped FFCV loader checks"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # ddpcifar from this checkout, in every subprocess
$PY benchmarks/gpu_check.py "$OUT" "${ARGS[@]}"
status=$?
echo "[gpu_check] exit status $status; results in $OUT/gpu_check.json"
exit $status
