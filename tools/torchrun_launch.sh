#!/usr/bin/env bash
# Shared by dist_train.sh / dist_test.sh:  bash tools/torchrun_launch.sh NPROC SCRIPT [script args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT (defaults: 1, 0, 127.0.0.1, 29500). Without
# CUDA the processes run on CPU with the gloo backend (mmpeft's compatibility fixes).
set -euo pipefail
NPROC=$1
SCRIPT=$2
shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python )}
PYTHONPATH="$ROOT:${PYTHONPATH:-}" exec "$PYTHON" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --nproc_per_node="$NPROC" --master_port="${PORT:-29500}" \
  "$ROOT/tools/$SCRIPT" "$@" --launcher pytorch
