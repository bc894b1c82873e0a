#!/usr/bin/env bash
# One-command environment for mmpeft: creates .venv/ at the repository root and installs the pinned
# OpenMMLab stack plus mmpeft (editable). Idempotent: a second run checks and returns in seconds.
#
#   bash tools/setup_env.sh            # uses ../shared/wheels for a prebuilt mmcv when present
#   PYTHON=python3.11 bash tools/setup_env.sh
#   bash tools/setup_env.sh --plan     # only say how mmcv's ops would be built here; installs nothing
#
# Versions and traps: ../shared/stack.md. mmcv 2.1.0 has only a source release on the registry; it is
# taken from a find-links folder if one offers a wheel, else compiled with ops (~13 min on 2 cores).
# GPUs: where torch sees one, mmcv's ops must carry CUDA kernels (Mask R-CNN's RoIAlign / NMS run there).
# tools/dev/cuda_build_plan.py decides: ops without CUDA where torch sees no GPU; else FORCE_CUDA=1,
# TORCH_CUDA_ARCH_LIST of the visible GPUs and CUDA_HOME of an nvcc matching torch's CUDA major.minor, or a
# stop naming the missing compiler (MMPEFT_MMCV_WITHOUT_CUDA=1: without CUDA, knowingly). An installed or
# prebuilt mmcv without CUDA kernels is replaced by a CUDA build there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.mmpeft-env-stamp"

# Everything that decides the environment's content goes into the stamp; a changed file reinstalls.
want_stamp() {
  cat tools/setup_env.sh tools/dev/cuda_build_plan.py requirements/*.txt setup.py pyproject.toml \
    | sha256sum | cut -d' ' -f1
}

# Python code: exit 0 when mmcv's ops import and, where torch sees a GPU, carry CUDA kernels.
MMCV_SUITS='import os, sys, torch, mmcv.ops
cuda_needed = torch.cuda.is_available() and os.environ.get("MMPEFT_MMCV_WITHOUT_CUDA") != "1"
sys.exit(cuda_needed and mmcv.ops.get_compiling_cuda_version() == "not available")'

# decide_mmcv_build PY: sets MMPEFT_MMCV_OPS=cpu|cuda (and for cuda FORCE_CUDA, TORCH_CUDA_ARCH_LIST,
# CUDA_HOME, read by mmcv's build), or stops the script with the plan's message naming what is missing.
decide_mmcv_build() {
  local plan
  plan="$("$1" tools/dev/cuda_build_plan.py)" || exit 1
  eval "$plan"
}

if [ "${1:-}" = "--plan" ]; then
  PY="$VENV/bin/python"
  [ -x "$PY" ] || PY="$PYTHON"
  decide_mmcv_build "$PY"
  if [ "$MMPEFT_MMCV_OPS" = cuda ]; then
    echo "[setup_env] plan: mmcv ops with CUDA: FORCE_CUDA=$FORCE_CUDA TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST" \
      "CUDA_HOME=$CUDA_HOME"
  else
    echo "[setup_env] plan: mmcv ops without CUDA"
  fi
  exit 0
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(want_stamp)" ] && [ -e mmpeft/.mim/configs ] \
   && "$VENV/bin/python" -c "import mmpeft, mmdet, mmseg, mmpretrain, timm; $MMCV_SUITS" 2>/dev/null; then
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

if ! "$PY" -c "$MMCV_SUITS" 2>/dev/null; then
  decide_mmcv_build "$PY"
  # pip would keep an installed mmcv that lacks the ops this machine needs
  if "$PY" -c "import mmcv" 2>/dev/null; then "$PY" -m pip uninstall -y -q mmcv; fi
  if "${PIP[@]}" --no-index "${FIND_LINKS[@]}" --no-deps "mmcv==2.1.0" 2>/dev/null \
     && "$PY" -c "$MMCV_SUITS" 2>/dev/null; then
    echo "[setup_env] mmcv: prebuilt wheel from find-links"
  else
    if "$PY" -c "import mmcv" 2>/dev/null; then "$PY" -m pip uninstall -y -q mmcv; fi  # a wheel without CUDA
    if [ "$MMPEFT_MMCV_OPS" = cuda ]; then
      echo "[setup_env] mmcv: compiling 2.1.0 with CUDA ops, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST" \
        "CUDA_HOME=$CUDA_HOME"
    else
      echo "[setup_env] mmcv: compiling 2.1.0 with ops (about 13 minutes on 2 cores)"
    fi
    # mmcv's setup.py compiles CUDA kernels wherever torch sees a GPU, FORCE_CUDA or not: hide it for ops
    # without CUDA (MMPEFT_MMCV_WITHOUT_CUDA=1 on a GPU machine)
    HIDE_GPU=()
    [ "$MMPEFT_MMCV_OPS" = cpu ] && HIDE_GPU=(env CUDA_VISIBLE_DEVICES=)
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${HIDE_GPU[@]}" "${PIP[@]}" --no-build-isolation --no-cache-dir \
      --no-binary mmcv "mmcv==2.1.0"
    "$PY" -c "$MMCV_SUITS" || { echo "[setup_env] the mmcv just built lacks CUDA ops although torch sees a GPU:" \
      "see its build log above" >&2; exit 1; }
  fi
fi
# mmcv's own runtime dependencies (the wheel was installed with --no-deps).
"${PIP[@]}" -q "${FIND_LINKS[@]}" "mmcv==2.1.0" -r requirements/mminstall.txt -r requirements/runtime.txt \
  -r requirements/tests.txt "setuptools>=77,<82" -c requirements/torch.txt
# editable, through PEP 660 (pyproject.toml): links configs/ and tools/ into mmpeft/.mim (mmpeft:: bases)
"${PIP[@]}" -q --no-deps --no-build-isolation -e .

"$PY" -c "import mmpeft, mmcv.ops, mmdet, mmseg, mmpretrain, timm, torch
print('[setup_env] ok: torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmpeft', mmpeft.__version__)"
want_stamp > "$STAMP"
