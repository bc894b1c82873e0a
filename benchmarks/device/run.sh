#!/usr/bin/env bash
# The GPU benchmarks of mmpeft in one call: prepare an environment on the device machine (no registry there),
# run each benchmark under its own time budget, write one markdown table per benchmark. See README.md here.
#
#   bash benchmarks/device/run.sh [--dry-run | --prepare-only] [--out DIR] [--wheels DIR] [--mmcv-ops MODE]
#
#   --dry-run     CPU, no preparation, every benchmark at toy size (what tests/test_tools/test_device_run.py runs)
#   --prepare-only  prepare (into /tmp/mmpeft-site, or $MMPEFT_SITE) and stop; a later call on the still warm
#                 machine skips the preparation: two calls when the mmcv build leaves too little of one
#   --out DIR     output folder (default: $OUT where set, as on the device machine, else work_dirs/device)
#   --wheels DIR  the pure-Python wheels + mmcv-2.1.0.tar.gz (default: $MMPEFT_WHEELS, .whl, shared/wheels,
#                 ../shared/wheels: the first that exists); benchmarks/device/fetch_wheels.sh fills .whl
#   --mmcv-ops MODE  how mmcv's ops are built: auto (default) CUDA ops for the visible GPU, and ops without
#                 CUDA if that build or its import check fails or runs out of its budget; cuda: CUDA ops or
#                 stop; cpu: ops without CUDA only (a C++ build with the GPU hidden from it, no nvcc). Without
#                 CUDA ops Mask R-CNN cannot run on the GPU (RoIAlign, NMS): HST vs full fine-tuning is then
#                 measured on UperNet 512x512 instead
#
# Budgets (seconds, environment): MMPEFT_BUDGET_PREPARE (pip installs, 120), MMPEFT_BUDGET_MMCV (the first
# mmcv build, 360), MMPEFT_BUDGET_MMCV_CPU (auto's second build, without CUDA, 300), MMPEFT_BUDGET_<STEP> for each step
# (HST_EFFICIENCY 150, HST_SPEED_MEMORY 120, POLYHISTOR_BATCHED 90, MERGE_SPEED 60, COLLECT_ENV 120). A step
# over its budget is stopped; its table is then missing and timings.md says so; the other steps still run.
set -uo pipefail
{  # the whole script is read before it runs: editing the file (e.g. a git checkout) mid-run cannot derail it
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

DRY=0
PREPARE_ONLY=0
OUT_DIR="${OUT:-work_dirs/device}"
WHEELS=""
MMCV_OPS=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --prepare-only) PREPARE_ONLY=1 ;;
    --out) OUT_DIR="${2:?--out needs a folder}"; shift ;;
    --wheels) WHEELS="${2:?--wheels needs a folder}"; shift ;;
    --mmcv-ops)
      MMCV_OPS="${2:-}"; shift
      case "$MMCV_OPS" in
        auto|cuda|cpu) ;;
        *) echo "[device] --mmcv-ops $MMCV_OPS: use auto, cuda or cpu" >&2; exit 2 ;;
      esac ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "[device] unknown argument $1: use --dry-run, --prepare-only, --out DIR, --wheels DIR, --mmcv-ops MODE" >&2
       exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
LOGS="$OUT_DIR/logs"  # one level down: the device tool brings back files at most two folders down
mkdir -p "$LOGS"
TIMINGS="$LOGS/timings.tsv"
: > "$TIMINGS"
T0=$(date +%s.%N)
FAILED=()

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }  # seconds since $1

# step NAME BUDGET_S CMD...: runs CMD with its output in logs/NAME.log under `timeout`, records the time.
step() {
  local name="$1" budget="$2"; shift 2
  local t rc status
  t=$(date +%s.%N)
  echo "[device] $name (budget ${budget}s) ..."
  timeout --kill-after=10 "$budget" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="stopped at its ${budget}s budget" ;;
    *) status="failed (exit $rc)" ;;
  esac
  [ $rc -eq 0 ] || FAILED+=("$name")
  printf '%s\t%s\t%s\n' "$name" "$(elapsed "$t")" "$status" >> "$TIMINGS"
  # on the device, timings.md so far: a call cut at the device tool's limit still brings back where it was
  [ "$DRY" = 1 ] || "$PY" benchmarks/device/tables.py timings "$TIMINGS" "$OUT_DIR/timings.md" \
    --title "Device run: timings (up to $name)" > /dev/null 2>&1
  echo "[device] $name: $status, $(elapsed "$t") s (total $(elapsed "$T0") s)"
  [ $rc -eq 0 ] || tail -n 15 "$LOGS/$name.log" | sed "s/^/[device]   $name| /"
  return $rc
}

PY="${PYTHON:-python3}"
if [ "$DRY" = 1 ]; then
  [ -x "$ROOT/.venv/bin/python" ] && PY="${PYTHON:-$ROOT/.venv/bin/python}"
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  DEVICE=cpu
  MACHINE="dry run on CPU ($(getconf _NPROCESSORS_ONLN) cores), toy sizes: not benchmark numbers"
else
  DEVICE=cuda
  MACHINE="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
  MACHINE="${MACHINE:-no GPU seen by nvidia-smi}, $(getconf _NPROCESSORS_ONLN) CPU cores"
fi
export MMPEFT_BENCH_MACHINE="$MACHINE"
export PYTHONUNBUFFERED=1
echo "[device] $MACHINE; output $OUT_DIR"

# ---------------------------------------------------------------------------------------------- preparation
prepare() {
  local site="${MMPEFT_SITE:-/tmp/mmpeft-site}" missing=() w
  export PYTHONPATH="$site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  # mmpeft from the working tree: PYTHONPATH, and the .mim links an editable install makes (mmpeft:: bases)
  mkdir -p mmpeft/.mim
  for w in configs tools model-index.yml; do
    [ -e "mmpeft/.mim/$w" ] || [ ! -e "$w" ] || ln -s "../../$w" "mmpeft/.mim/$w"
  done
  # a machine still warm from an earlier call keeps /tmp: its checked environment is used as it is, unless
  # CUDA ops are asked for and it has none (the marker holds the ops it was built with: cuda or cpu)
  if [ -f "$site/.mmpeft-ready" ]; then
    local built
    built="$(cat "$site/.mmpeft-ready")"
    if [ "$MMCV_OPS" != cuda ] || [ "$built" = cuda ]; then
      echo "[device] $site was prepared and checked by an earlier call (mmcv ops: ${built:-?}): preparation skipped"
      return 0
    fi
    echo "[device] $site holds mmcv ops without CUDA; --mmcv-ops cuda: preparing again"
    rm -f "$site/.mmpeft-ready"
  fi
  if [ -z "$WHEELS" ]; then
    for w in "${MMPEFT_WHEELS:-}" .whl shared/wheels ../shared/wheels; do
      [ -n "$w" ] && [ -d "$w" ] && { WHEELS="$w"; break; }
    done
  fi
  if [ -z "$WHEELS" ] || [ ! -d "$WHEELS" ]; then
    echo "[device] no wheel folder: pass --wheels DIR or fill .whl with 'bash benchmarks/device/fetch_wheels.sh'" \
      "on a machine with registry access, then carry .whl (device tool: carry=['.whl'])" >&2
    return 1
  fi
  WHEELS="$(cd "$WHEELS" && pwd)"
  for w in mmengine-0.10.7 mmdet-3.3.0 mmsegmentation-1.2.2 mmpretrain-1.2.0 setuptools-; do
    compgen -G "$WHEELS/$w*.whl" > /dev/null || missing+=("$w*.whl")
  done
  compgen -G "$WHEELS/mmcv-2.1.0.tar.gz" > /dev/null || missing+=("mmcv-2.1.0.tar.gz (mmcv's source release)")
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[device] $WHEELS lacks: ${missing[*]}; run 'bash benchmarks/device/fetch_wheels.sh' where pip" \
      "reaches the registry" >&2
    return 1
  fi
  mkdir -p "$site"
  # every wheel but mmcv's (a cp311 wheel built against another torch may lie there too): no resolver, no index
  local wheels=()
  for w in "$WHEELS"/*.whl; do case "$(basename "$w")" in mmcv-*) ;; *) wheels+=("$w") ;; esac; done
  step prepare_wheels "${MMPEFT_BUDGET_PREPARE:-120}" "$PY" -m pip install -q --disable-pip-version-check \
    --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${wheels[@]}" || return 1
  # mmcv's ops for the visible GPU only (tools/dev/cuda_build_plan.py: FORCE_CUDA, TORCH_CUDA_ARCH_LIST, CUDA_HOME)
  local plan
  case "$MMCV_OPS" in
    cpu) export MMPEFT_MMCV_WITHOUT_CUDA=1 ;;
    cuda) unset MMPEFT_MMCV_WITHOUT_CUDA ;;  # CUDA ops or stop: an inherited opt-out does not count
  esac
  if ! plan="$("$PY" tools/dev/cuda_build_plan.py)"; then
    [ "$MMCV_OPS" = auto ] || return 1
    echo "[device] no CUDA build of mmcv is possible here (above): its ops are built without CUDA"
    plan="export MMPEFT_MMCV_OPS=cpu"
  fi
  eval "$plan"
  echo "[device] mmcv build plan: $(echo "$plan" | tr '\n' ' ')"
  if [ "$MMCV_OPS" = cuda ] && [ "$MMPEFT_MMCV_OPS" != cuda ]; then
    echo "[device] --mmcv-ops cuda, but torch sees no GPU here: nothing to build CUDA ops for" >&2
    return 1
  fi
  local first_step=("prepare_mmcv" "prepare_check")
  if ! { build_mmcv prepare_mmcv "${MMPEFT_BUDGET_MMCV:-360}" "$site" && check_mmcv prepare_check; }; then
    [ "$MMCV_OPS" = auto ] && [ "$MMPEFT_MMCV_OPS" = cuda ] || return 1
    # ops without CUDA still run every benchmark but Mask R-CNN, which UperNet replaces; the failed step
    # stays in timings.md but does not fail the run
    echo "[device] mmcv's CUDA build failed, did not import or ran out of its budget: building its ops without CUDA"
    local kept=() f
    for f in "${FAILED[@]}"; do [[ " ${first_step[*]} " == *" $f "* ]] || kept+=("$f"); done
    FAILED=("${kept[@]}")
    rm -rf "$site"/mmcv "$site"/mmcv-*.dist-info  # pip --target keeps an installed package
    unset FORCE_CUDA TORCH_CUDA_ARCH_LIST
    export MMPEFT_MMCV_OPS=cpu
    build_mmcv prepare_mmcv_cpu "${MMPEFT_BUDGET_MMCV_CPU:-300}" "$site" && check_mmcv prepare_check_cpu || return 1
  fi
  echo "$MMPEFT_MMCV_OPS" > "$site/.mmpeft-ready"
}

build_mmcv() {  # build_mmcv STEP BUDGET SITE: mmcv 2.1.0 from its source release, with the exported plan
  # mmcv's setup.py compiles CUDA kernels wherever torch sees a GPU, FORCE_CUDA or not: the build without
  # CUDA runs with the GPU hidden
  local hide=()
  [ "$MMPEFT_MMCV_OPS" = cpu ] && hide=(env CUDA_VISIBLE_DEVICES=)
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-16}" step "$1" "$2" "${hide[@]}" \
    "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-build-isolation --no-cache-dir \
    --upgrade --target "$3" "$WHEELS/mmcv-2.1.0.tar.gz"
}

check_mmcv() {  # check_mmcv STEP: mmpeft and the toolboxes import; CUDA ops are there if planned
  step "$1" 120 "$PY" -c "import os, mmpeft, mmcv.ops, mmdet, mmseg, mmpretrain, timm, torch
cuda = mmcv.ops.get_compiling_cuda_version()
print('torch', torch.__version__, 'mmcv', mmcv.__version__, 'ops CUDA', cuda)
assert os.environ['MMPEFT_MMCV_OPS'] != 'cuda' or cuda != 'not available', 'mmcv ops were built without CUDA'"
}

if [ "$DRY" = 0 ]; then
  if ! prepare; then
    printf '%s\t%s\t%s\n' prepare "$(elapsed "$T0")" "failed: see the messages above and logs/" >> "$TIMINGS"
    "$PY" benchmarks/device/tables.py timings "$TIMINGS" "$OUT_DIR/timings.md" --title "Device run: timings"
    echo "[device] preparation failed after $(elapsed "$T0") s: no benchmark was run" >&2
    exit 1
  fi
  if [ "$PREPARE_ONLY" = 1 ]; then
    "$PY" benchmarks/device/tables.py timings "$TIMINGS" "$OUT_DIR/timings.md" --title "Device run: preparation"
    echo "[device] prepared in $(elapsed "$T0") s; run again without --prepare-only while the machine is warm"
    [ ${#FAILED[@]} -eq 0 ] || { echo "[device] failed: ${FAILED[*]}" >&2; exit 1; }
    exit 0
  fi
fi

# ---------------------------------------------------------------------------------------------- benchmarks
# NAME: table file and log name; each command writes logs/NAME.json (merge_speed.py has no --json: its log).
# HST vs full fine-tuning trains Mask R-CNN where mmcv's ops carry CUDA, else UperNet 512x512 (no mmcv ops):
# the dry run on a CPU machine takes the UperNet path, the one a device run may fall back to
OPS_CUDA="$("$PY" -c "import mmcv.ops; print(mmcv.ops.get_compiling_cuda_version())" 2> "$LOGS/mmcv_ops.log")" \
  || OPS_CUDA="not importable (logs/mmcv_ops.log)"
if [ -n "$OPS_CUDA" ] && [ "$OPS_CUDA" != "not available" ] && [[ "$OPS_CUDA" != "not importable"* ]]
then SPEED_TASK=det
else SPEED_TASK=seg
fi
echo "[device] mmcv ops CUDA: ${OPS_CUDA:-?}: hst_speed_memory trains $([ $SPEED_TASK = det ] && echo 'Mask R-CNN' \
  || echo 'UperNet') (--task $SPEED_TASK)"
if [ "$DRY" = 1 ]; then
  ARGS_hst_efficiency=(--toy --rows hst-serial --batches 1 --skip-flops)
  ARGS_hst_speed_memory=(--toy --task "$SPEED_TASK")
  ARGS_polyhistor_batched=(--toy)
  ARGS_merge_speed=(--toy)
else
  # sizes for an H200 inside the budgets: Table 9 at the paper's batch sizes (1 / 32 / 128) with fewer
  # passes; Mask R-CNN 1024x1024 training (the issue's size); Polyhistor at the issue's 512x512
  ARGS_hst_efficiency=(--iters 20 --warmup 5 --train-steps 5)
  if [ "$SPEED_TASK" = det ]; then  # Mask R-CNN 1x: 2 images per GPU
    ARGS_hst_speed_memory=(--task det --size 1024 --batch 2 --steps 5 --warmup 2 --vit-depth 12
                           --infer-size 1024 --infer-batches 1 8 --infer-iters 10)
  else  # UperNet 160k: 4 images per GPU
    ARGS_hst_speed_memory=(--task seg --size 512 --batch 4 --steps 5 --warmup 2 --vit-depth 12
                           --infer-size 512 --infer-batches 1 8 --infer-iters 10)
  fi
  ARGS_polyhistor_batched=(--batch-size 2 --size 512 --iters 5 --warmup 2)
  ARGS_merge_speed=(--model vit_base_patch16_224 --img 224 --batch 32 --repeats 30 --warmup 5)
fi

bench() {  # bench NAME DEFAULT_BUDGET: the step, then its table
  local name="$1" budget_var="MMPEFT_BUDGET_$(echo "$1" | tr a-z A-Z)" args_var="ARGS_$1[@]"
  local budget="${!budget_var:-$2}" json=()
  [ "$name" = merge_speed ] || json=(--json "$LOGS/$name.json")
  step "$name" "$budget" "$PY" "benchmarks/$name.py" --device "$DEVICE" "${!args_var}" "${json[@]}" || return 0
  local src="$LOGS/$name.json"
  [ "$name" = merge_speed ] && src="$LOGS/$name.log"
  "$PY" benchmarks/device/tables.py "$name" "$src" "$OUT_DIR/$name.md" --title "$name" || FAILED+=("$name table")
}

env_table() {
  step collect_env "${MMPEFT_BUDGET_COLLECT_ENV:-120}" "$PY" tools/collect_env.py \
    && "$PY" benchmarks/device/tables.py env "$LOGS/collect_env.log" "$OUT_DIR/env.md" --title "Environment"
}
if [ "$DRY" = 1 ]; then
  # toy sizes take seconds of compute but each script spends most of its time importing the toolboxes (and
  # spawning a process per measured mode): on CPU the steps overlap; failures are gathered from the tables
  bench hst_efficiency 300 & bench hst_speed_memory 300 & bench polyhistor_batched 300 & bench merge_speed 300 &
  env_table &
  wait
  for name in hst_efficiency hst_speed_memory polyhistor_batched merge_speed env; do
    [ -s "$OUT_DIR/$name.md" ] || FAILED+=("$name")
  done
else
  # one at a time on the GPU, so that no benchmark's timing shares the device
  bench hst_efficiency 150
  bench hst_speed_memory 120
  bench polyhistor_batched 90
  bench merge_speed 60
  env_table
fi

if [ "$DRY" = 0 ]; then  # the device tool brings back 8 files at most: the logs travel as one archive
  tar -C "$OUT_DIR" -czf "$OUT_DIR/logs.tar.gz" logs && mv "$LOGS" "/tmp/mmpeft-device-logs.$$" \
    && LOGS="/tmp/mmpeft-device-logs.$$" && TIMINGS="$LOGS/timings.tsv"
fi
printf '%s\t%s\t%s\n' total "$(elapsed "$T0")" "${#FAILED[@]} failed" >> "$TIMINGS"
"$PY" benchmarks/device/tables.py timings "$TIMINGS" "$OUT_DIR/timings.md" --title "Device run: timings"
echo "[device] done in $(elapsed "$T0") s; tables in $OUT_DIR: $(cd "$OUT_DIR" && ls *.md | tr '\n' ' ')"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "[device] failed: ${FAILED[*]} (logs in $LOGS)" >&2
  exit 1
fi
exit 0
}
