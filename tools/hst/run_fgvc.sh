#!/usr/bin/env bash
# HST on the FGVC datasets and full CIFAR-100 (paper Table 3), every dataset of a family, trained then
# tested in turn; resumable dataset by dataset:
#
#   bash tools/hst/run_fgvc.sh CONFIG_PREFIX GPUS [KEY=VALUE ...]
#   bash tools/hst/run_fgvc.sh configs/hst/fgvc/vit-b-in21k_hst_ 4    # ImageNet-21k weights, 6 datasets
#   bash tools/hst/run_fgvc.sh configs/hst/fgvc/vit-b-mae_hst_ 4      # MAE weights, 6 datasets
#
# The configs are the authors' recipe on 4 GPUs x 32 images. Data: data/fgvc/<dataset>/ (VPT's JSON
# splits) and data/cifar100/cifar-100-python/. Results: work_dirs/<config>/test_metrics.json. See
# tools/hst/sweep.sh for the details.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash tools/hst/run_fgvc.sh CONFIG_PREFIX GPUS [KEY=VALUE ...]" >&2
  exit 2
fi
# classification: no test-time augmentation in the paper (sweep.sh would look for one in every config)
TTA=${TTA:-0} exec bash "$(dirname "${BASH_SOURCE[0]}")/sweep.sh" 4 "$@"
