#!/usr/bin/env bash
# The built-in default main job, set-up included:  bash tools/run_demo.sh [train.py options]
# Trains the demo config on generated data, then evaluates its last (delta) checkpoint.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
CONFIG=${CONFIG:-configs/demo/bitfit_swin-tiny_synthetic-seg-64x64.py}
WORK_DIR=${WORK_DIR:-work_dirs/demo}
.venv/bin/python tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"
LAST=$(cat "$WORK_DIR/last_checkpoint")
.venv/bin/python tools/test.py "$CONFIG" "$LAST" --work-dir "$WORK_DIR" --out "$WORK_DIR/test_metrics.json"
.venv/bin/python tools/analysis_tools/count_params.py "$CONFIG"
