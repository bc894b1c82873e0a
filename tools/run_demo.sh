#!/usr/bin/env bash
# The built-in default main job, set-up included:  bash tools/run_demo.sh [run_demo.py options]
# Pretrains a tiny Swin on synthetic data (cached), adapts it frozen with Polyhistor-Lite to the four
# PASCAL-Context tasks of a synthetic copy, and compares it with decoders only and full fine-tuning.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
exec .venv/bin/python tools/demo/run_demo.py "$@"
