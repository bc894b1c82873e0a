#!/usr/bin/env bash
# The test suite, set-up included:  bash tools/run_tests.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
# lint first (pyproject.toml [tool.ruff]): a few seconds, and a failure names file, line and rule
.venv/bin/ruff check .
exec .venv/bin/python -m pytest tests "$@"
