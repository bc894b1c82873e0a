#!/usr/bin/env bash
# One-command environment for mmpeft: creates .venv/ at the repository root and installs the pinned
# OpenMMLab stack plus mmpeft (editable). Idempotent: a second run checks and returns in seconds.
#
#   bash tools/setup_env.sh            # uses ../shared/wheels for a prebuilt mmcv when present
#   PYTHON=python3.11 bash tools/setup_env.sh
#
# Versions and traps: ../shared/stack.md. mmcv 2.1.0 has only a source release on the registry; it is
# taken from a find-links folder if one offers a wheel, else compiled with ops (~13 min on 2 cores).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.mmpeft-env-stamp"

# Everything that decides the environment's content goes into the stamp; a changed file reinstalls.
want_stamp() {
  cat tools/setup_env.sh requirements/*.txt setup.py | sha256sum | cut -d' ' -f1
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(want_stamp)" ] \
   && "$VENV/bin/python" -c "import mmpeft, mmcv.ops, mmdet, mmseg, mmpretrain, timm" 2>/dev/null; then
  echo "[setup_env] .venv is up to date ($("$VENV/bin/python" -c 'import mmpeft; print("mmpeft", mmpeft.__version__)'))"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check)

FIND_LINKS=()
for d in "${MMPEFT_WHEELS:-}" "$ROOT/../shared/wheels"; do
  [ -n "$d" ] && [ -d "$d" ] && FIND_LINKS+=(--find-links "$d")
done

# setuptools < 82: mmcv's build and mmengine's `mmdet::` base resolution need pkg_resources.
"${PIP[@]}" -q "pip>=23" "setuptools>=77,<82" wheel
"${PIP[@]}" -q -r requirements/torch.txt

if ! "$PY" -c "import mmcv, mmcv.ops" 2>/dev/null; then
  if "${PIP[@]}" --no-index "${FIND_LINKS[@]}" --no-deps "mmcv==2.1.0" 2>/dev/null; then
    echo "[setup_env] mmcv: prebuilt wheel from find-links"
  else
    echo "[setup_env] mmcv: compiling 2.1.0 with ops (about 13 minutes on 2 cores)"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" --no-build-isolation --no-cache-dir \
      --no-binary mmcv "mmcv==2.1.0"
  fi
fi
# mmcv's own runtime dependencies (the wheel was installed with --no-deps).
"${PIP[@]}" -q "${FIND_LINKS[@]}" "mmcv==2.1.0" -r requirements/mminstall.txt -r requirements/runtime.txt \
  -r requirements/tests.txt "setuptools>=77,<82" -c requirements/torch.txt
"${PIP[@]}" -q --no-deps --no-build-isolation -e .

"$PY" -c "import mmpeft, mmcv.ops, mmdet, mmseg, mmpretrain, timm, torch; print('[setup_env] ok: torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmpeft', mmpeft.__version__)"
want_stamp > "$STAMP"
