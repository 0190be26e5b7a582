#!/usr/bin/env bash
# Train on one machine: `torchrun --standalone`, one process per GPU (NPROC on CPU).
#
#   launch/standalone.sh SPEC [TRAIN ARGS...]
#   launch/standalone.sh [TORCHRUN OPTIONS...] -- SPEC [TRAIN ARGS...]
#
#   launch/standalone.sh specs/era_s9.json --set train.epochs=2
#   NPROC=2 launch/standalone.sh --max-restarts=3 -- specs/era_s9.json --set logging.run_name=e1
#
# Environment:
#   NPROC         processes on this machine (default: the number of GPUs; 1 without one)
#   RANKS_FILTER  local ranks whose console output is shown (default 0; empty: all ranks)
#   TORCHRUN      the launcher (default: this checkout's .venv/bin/torchrun, else torchrun)
# The torchrun command is printed (to stderr) before it runs, so it can be copied and changed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
torchrun="${TORCHRUN:-}"
if [[ -z "$torchrun" ]]; then
    if [[ -x "$here/../.venv/bin/torchrun" ]]; then torchrun="$here/../.venv/bin/torchrun"; else torchrun=torchrun; fi
fi

# Everything before `--` is for torchrun, everything after it for ddpcifar.train; without `--`
# all arguments are for ddpcifar.train.
launcher_args=()
if [[ " $* " == *" -- "* ]]; then
    while [[ $# -gt 0 && "$1" != "--" ]]; do launcher_args+=("$1"); shift; done
    shift
fi
if [[ $# -eq 0 ]]; then
    echo "usage: $0 [TORCHRUN OPTIONS... --] SPEC [TRAIN ARGS...]" >&2
    exit 2
fi

gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
nproc="${NPROC:-$(( gpus > 0 ? gpus : 1 ))}"
filter=()
[[ -n "${RANKS_FILTER-0}" ]] && filter=(--local-ranks-filter="${RANKS_FILTER-0}")

# A store per attempt, served by rank 0's worker. ddpcifar.train no longer needs it: it keeps each
# attempt's keys apart in torchrun's shared store, which made restarts fail with "connectFullMesh
# ... Connection refused" (docs/resilience.md, "Restarts that cannot fail by themselves").
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1

cmd=("$torchrun" --standalone --nproc-per-node="$nproc" "${filter[@]}" "${launcher_args[@]}"
     -m ddpcifar.train "$@")
printf '+' >&2; printf ' %q' "${cmd[@]}" >&2; printf '\n' >&2
exec "${cmd[@]}"
