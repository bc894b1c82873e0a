#!/usr/bin/env bash
# Fetch, on a machine whose pip reaches the registry, what benchmarks/device/run.sh installs on the device
# machine (CPython 3.12, x86-64, no registry): the pure-Python OpenMMLab wheels, their small dependencies
# that the device's python3 lacks, and mmcv 2.1.0's source release (built there against its torch).
#
#   bash benchmarks/device/fetch_wheels.sh [DIR]      # default DIR: .whl at the repository root
#
# Already on the device machine, so not fetched (../shared/stack.md; /work/.library/device/KINDS.md lists its
# packages): torch, torchvision, timm, numpy, scipy, matplotlib, opencv-python-headless, pillow, rich, six,
# einops, pyyaml, regex, tqdm, packaging, safetensors, wheel. Fetching scipy and OpenCV too would pass the
# 64 MiB that travels with the working tree (about 35 and 61 MiB); the script prints the folder's size.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${1:-$ROOT/.whl}"
PY="${PYTHON:-python3}"
[ -z "${PYTHON:-}" ] && [ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"  # has torch, wheel: see below
mkdir -p "$DIR"
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
# --no-deps: one version of each, named here (two versions of one package stop the install there)
PKGS=(
  "mmengine==0.10.7" "mmdet==3.3.0" "mmsegmentation==1.2.2" "mmpretrain==1.2.0" "setuptools==81.0.0"
  addict yapf platformdirs termcolor terminaltables prettytable wcwidth ftfy mat4py modelindex ordered-set
  importlib-metadata shapely pycocotools
)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DIR" "${PKGS[@]}"
# mmcv has only a source release on the registry; run.sh builds it on the device with its CUDA ops. pip runs its
# setup.py for the metadata, which imports torch and needs `wheel`: hence a python that has both (.venv's)
"$PY" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$DIR" "mmcv==2.1.0"
size_mb=$(du -sm "$DIR" | cut -f1)
echo "[fetch_wheels] $DIR: $(ls "$DIR" | wc -l) files, ${size_mb} MiB"
if [ "$size_mb" -gt 56 ]; then
  echo "[fetch_wheels] warning: ${size_mb} MiB leaves little of the 64 MiB that travels with the working tree;" \
    "delete what the device machine already has (check there: python3 -m pip list)" >&2
fi
