#!/usr/bin/env bash
# HST on VTAB-1k (paper Table 2), every task of a family, trained then tested in turn; resumable task by
# task (a finished task is skipped, an interrupted one resumes from its last checkpoint):
#
#   bash tools/hst/run_vtab.sh CONFIG_PREFIX GPUS [KEY=VALUE ...]
#   bash tools/hst/run_vtab.sh configs/hst/vtab1k/vit-b_hst_vtab1k- 2      # HST-B, 19 tasks
#   bash tools/hst/run_vtab.sh configs/hst/vtab1k/vit-b_hst-s_vtab1k- 2    # HST-S, 19 tasks
#
# The configs are the authors' recipe on 2 GPUs x 32 images. Data: data/vtab-1k/<task>/ (or pass
# train_dataloader.dataset.data_root=... val_dataloader.dataset.data_root=...
# test_dataloader.dataset.data_root=...). Results: work_dirs/<config>/test_metrics.json (WORK_ROOT
# changes work_dirs); the last lines printed list them. See tools/hst/sweep.sh for the details.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash tools/hst/run_vtab.sh CONFIG_PREFIX GPUS [KEY=VALUE ...]" >&2
  exit 2
fi
# classification: no test-time augmentation in the paper (sweep.sh would look for one in every config)
TTA=${TTA:-0} exec bash "$(dirname "${BASH_SOURCE[0]}")/sweep.sh" 2 "$@"
