#!/usr/bin/env bash
# Train, then test, every config CONFIG_PREFIX*.py in turn; resumable config by config. The engine of
# run_vtab.sh and run_fgvc.sh:
#
#   bash tools/hst/sweep.sh RECIPE_GPUS CONFIG_PREFIX GPUS [KEY=VALUE ...]
#
# RECIPE_GPUS: the GPUs the configs' per-GPU batch size was written for (a warning when GPUS differs:
# the total batch, and so the recipe, changes; lr is not rescaled). KEY=VALUE: --cfg-options of both
# tools/train.py and tools/test.py (e.g. train_dataloader.dataset.data_root=/data/vtab-1k).
#
# Per config NAME the work dir is $WORK_ROOT/NAME (default work_dirs/NAME, as tools/train.py's):
#   test_metrics.json  the test metrics (tools/test.py --out); its presence marks NAME done (skipped)
#   test_metrics_tta.json  for configs with a test-time augmentation (tta_model + tta_pipeline, e.g. the
#                      ADE20K rows: Table 5's +MS column), the metrics of tools/test.py --tta; TTA=0 skips it
#   train_done         written after training ended; holds the checkpoint tested
# An interrupted training resumes from the work dir's latest checkpoint (tools/train.py --resume); a
# finished one is only tested. DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash tools/hst/sweep.sh RECIPE_GPUS CONFIG_PREFIX GPUS [KEY=VALUE ...]" >&2
  exit 2
fi
RECIPE_GPUS=$1
PREFIX=$2
GPUS=$3
shift 3
OPTIONS=("$@")
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python )}
WORK_ROOT=${WORK_ROOT:-work_dirs}
DRY_RUN=${DRY_RUN:-0}
TTA=${TTA:-1}

case "$GPUS" in
  ''|*[!0-9]*|0) echo "sweep: GPUS must be a positive integer, got '$GPUS'" >&2; exit 2 ;;
esac
for opt in "${OPTIONS[@]+"${OPTIONS[@]}"}"; do
  case "$opt" in
    *=*) ;;
    *) echo "sweep: extra arguments are --cfg-options KEY=VALUE pairs, got '$opt'" >&2; exit 2 ;;
  esac
done
shopt -s nullglob
CONFIGS=("$PREFIX"*.py)
shopt -u nullglob
if [ ${#CONFIGS[@]} -eq 0 ]; then
  echo "sweep: no config matches ${PREFIX}*.py (CONFIG_PREFIX is a path prefix, e.g." \
       "configs/hst/vtab1k/vit-b_hst_vtab1k-)" >&2
  exit 2
fi
if [ "$GPUS" != "$RECIPE_GPUS" ]; then
  echo "sweep: warning: the configs' batch_size is per GPU for $RECIPE_GPUS GPUs; on $GPUS GPUs the total" \
       "batch differs from the authors' recipe (lr is not rescaled)" >&2
fi

run() {  # a command, or its echo under DRY_RUN=1
  if [ "$DRY_RUN" = 1 ]; then echo "+ $*"; else "$@"; fi
}
cfg_options=()
if [ ${#OPTIONS[@]} -gt 0 ]; then cfg_options=(--cfg-options "${OPTIONS[@]}"); fi

# the configs that define a test-time augmentation (tools/test.py --tta uses it), read in one process
TTA_NAMES=""
if [ "$TTA" != 0 ]; then
  TTA_NAMES=$("$PYTHON" - "${CONFIGS[@]}" <<'PY'
import functools, os.path as osp, sys
import mmengine.config.utils as utils
utils.load = functools.lru_cache(maxsize=None)(utils.load)  # the toolboxes' metafiles, once
from mmengine.config import Config
for path in sys.argv[1:]:
    cfg = Config.fromfile(path)
    if cfg.get('tta_model') and cfg.get('tta_pipeline'):
        print(osp.splitext(osp.basename(path))[0])
PY
)
fi
has_tta() { grep -qx -- "$1" <<< "$TTA_NAMES"; }
test_cmd() {  # CONFIG CKPT WORK_DIR OUT [--tta]
  if [ "$GPUS" -gt 1 ]; then
    run bash "$ROOT/tools/dist_test.sh" "$1" "$2" "$GPUS" --work-dir "$3" --out "$4" "${@:5}" \
      "${cfg_options[@]+"${cfg_options[@]}"}"
  else
    run "$PYTHON" "$ROOT/tools/test.py" "$1" "$2" --work-dir "$3" --out "$4" "${@:5}" \
      "${cfg_options[@]+"${cfg_options[@]}"}"
  fi
}

echo "sweep: ${#CONFIGS[@]} configs matching ${PREFIX}*.py on $GPUS GPU(s)"
for cfg in "${CONFIGS[@]}"; do
  name=$(basename "$cfg" .py)
  wd="$WORK_ROOT/$name"
  result="$wd/test_metrics.json"
  tta_result="$wd/test_metrics_tta.json"
  tta=0
  if has_tta "$name"; then tta=1; fi
  if [ -f "$result" ] && { [ "$tta" = 0 ] || [ -f "$tta_result" ]; }; then
    echo "[done]  $name ($result)"
    continue
  fi
  if [ ! -f "$wd/train_done" ]; then
    echo "[train] $name -> $wd"
    if [ "$GPUS" -gt 1 ]; then
      run bash "$ROOT/tools/dist_train.sh" "$cfg" "$GPUS" --work-dir "$wd" --resume \
        "${cfg_options[@]+"${cfg_options[@]}"}"
    else
      run "$PYTHON" "$ROOT/tools/train.py" "$cfg" --work-dir "$wd" --resume "${cfg_options[@]+"${cfg_options[@]}"}"
    fi
    if [ "$DRY_RUN" != 1 ]; then
      # mmengine's CheckpointHook names the last checkpoint it saved in work_dir/last_checkpoint
      if [ ! -f "$wd/last_checkpoint" ]; then
        echo "sweep: training $cfg ended without $wd/last_checkpoint; see the log in $wd" >&2
        exit 1
      fi
      cp "$wd/last_checkpoint" "$wd/train_done"
    fi
  fi
  ckpt=$( [ -f "$wd/train_done" ] && cat "$wd/train_done" || echo "<checkpoint named in $wd/last_checkpoint>" )
  if [ ! -f "$result" ]; then
    echo "[test]  $name: $ckpt"
    test_cmd "$cfg" "$ckpt" "$wd/test" "$result"
  fi
  if [ "$tta" = 1 ] && [ ! -f "$tta_result" ]; then
    echo "[tta]   $name: $ckpt"
    test_cmd "$cfg" "$ckpt" "$wd/test_tta" "$tta_result" --tta
  fi
done

# one line per config: its test metrics (those not finished yet say so)
"$PYTHON" - "$WORK_ROOT" "${CONFIGS[@]}" <<'PY'
import json, os.path as osp, sys
root, configs = sys.argv[1], sys.argv[2:]
print(f"{'config':<50} result")
for cfg in configs:
    name = osp.splitext(osp.basename(cfg))[0]
    path = osp.join(root, name, 'test_metrics.json')
    if osp.isfile(path):
        with open(path) as f:
            metrics = json.load(f)
        print(f'{name:<50} ' + ', '.join(f'{k}: {v:.2f}' if isinstance(v, float) else f'{k}: {v}'
                                            for k, v in metrics.items()))
    else:
        print(f'{name:<50} (not finished)')
PY
