#!/usr/bin/env bash
# Distributed training with torchrun:  bash tools/dist_train.sh CONFIG GPUS [train.py options]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT (see tools/torchrun_launch.sh).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash tools/dist_train.sh CONFIG GPUS [options of tools/train.py]" >&2
  exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
exec bash "$(dirname "${BASH_SOURCE[0]}")/torchrun_launch.sh" "$GPUS" train.py "$CONFIG" "$@"
