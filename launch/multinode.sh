#!/usr/bin/env bash
# Train on several machines: run this once on every node, with the same SPEC and arguments.
#
# Static rendezvous (node ranks fixed; rank 0 and the run directory stay on node 0):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 launch/multinode.sh SPEC [TRAIN ARGS...]   # node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 launch/multinode.sh SPEC [TRAIN ARGS...]   # node 1
# c10d rendezvous (ranks assigned as nodes join; NNODES may be a range MIN:MAX):
#   NNODES=2 RDZV_ENDPOINT=10.0.0.1:29400 RDZV_ID=job42 launch/multinode.sh SPEC ...     # every node
# torchrun options go before `--`:
#   NNODES=2 ... launch/multinode.sh --max-restarts=3 -- SPEC --set logging.run_name=big
#
# Environment:
#   NNODES        number of nodes, or MIN:MAX (required)
#   NPROC         processes per node (default: the number of GPUs; 1 without one)
#   NODE_RANK, MASTER_ADDR, MASTER_PORT (default 29500)    static rendezvous
#   RDZV_ENDPOINT (HOST:PORT), RDZV_ID (default ddpcifar)  c10d rendezvous, used when set
#   RANKS_FILTER  local ranks whose console output is shown (default 0; empty: all ranks)
#   TORCHRUN      the launcher (default: this checkout's .venv/bin/torchrun, else torchrun)
#   IFNAME        network interface for gloo and NCCL (sets GLOO_SOCKET_IFNAME and
#                 NCCL_SOCKET_IFNAME unless they are set), e.g. eth0 or ib0
# Every node needs the prepared data at the spec's data.dir. Only global rank 0 writes the run
# directory; with c10d rendezvous rank 0 can move to another node after a restart, so put
# logging.runs_dir on a shared file system if you use --max-restarts with it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
torchrun="${TORCHRUN:-}"
if [[ -z "$torchrun" ]]; then
    if [[ -x "$here/../.venv/bin/torchrun" ]]; then torchrun="$here/../.venv/bin/torchrun"; else torchrun=torchrun; fi
fi

launcher_args=()
if [[ " $* " == *" -- "* ]]; then
    while [[ $# -gt 0 && "$1" != "--" ]]; do launcher_args+=("$1"); shift; done
    shift
fi
if [[ $# -eq 0 || -z "${NNODES:-}" ]]; then
    echo "usage: NNODES=N (NODE_RANK=R MASTER_ADDR=HOST | RDZV_ENDPOINT=HOST:PORT) $0 [TORCHRUN OPTIONS... --] SPEC [TRAIN ARGS...]" >&2
    exit 2
fi

if [[ -n "${RDZV_ENDPOINT:-}" ]]; then
    rdzv=(--rdzv-backend=c10d --rdzv-endpoint="$RDZV_ENDPOINT" --rdzv-id="${RDZV_ID:-ddpcifar}")
elif [[ -n "${NODE_RANK:-}" && -n "${MASTER_ADDR:-}" ]]; then
    rdzv=(--node-rank="$NODE_RANK" --master-addr="$MASTER_ADDR" --master-port="${MASTER_PORT:-29500}")
else
    echo "$0: set RDZV_ENDPOINT (c10d rendezvous) or NODE_RANK and MASTER_ADDR (static)" >&2
    exit 2
fi

if [[ -n "${IFNAME:-}" ]]; then
    export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-$IFNAME}"
    export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-$IFNAME}"
fi

gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
nproc="${NPROC:-$(( gpus > 0 ? gpus : 1 ))}"
filter=()
[[ -n "${RANKS_FILTER-0}" ]] && filter=(--local-ranks-filter="${RANKS_FILTER-0}")

# A store per attempt, served by rank 0's worker. ddpcifar.train no longer needs it: it keeps each
# attempt's keys apart in torchrun's shared store, which made restarts fail with "connectFullMesh
# ... Connection refused" (docs/resilience.md, "Restarts that cannot fail by themselves").
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1

cmd=("$torchrun" --nnodes="$NNODES" --nproc-per-node="$nproc" "${rdzv[@]}" "${filter[@]}"
     "${launcher_args[@]}" -m ddpcifar.train "$@")
printf '+' >&2; printf ' %q' "${cmd[@]}" >&2; printf '\n' >&2
exec "${cmd[@]}"
