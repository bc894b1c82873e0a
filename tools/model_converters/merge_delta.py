"""Write a full checkpoint from base weights + an mmpeft delta (trainable-only) checkpoint.

    python tools/model_converters/merge_delta.py DELTA OUT [--base BASE] [--keep-training-state]

BASE defaults to the base recorded in the delta (``meta['mmpeft_delta']['base']``, or a file of that
name beside DELTA). The base must hold exactly the frozen keys the delta was trained on, with the
recorded shapes; otherwise the error names the missing / unexpected / mismatched keys. The output
holds ``meta`` and the merged ``state_dict`` (plus optimizer / scheduler state with
``--keep-training-state``) and is written atomically.
"""
import argparse
import os.path as osp

import mmpeft  # noqa: F401  (atomic saving, legacy torch.load for mmengine checkpoints)
import torch
from mmengine.runner.checkpoint import save_checkpoint

from mmpeft.utils.delta import DELTA_KEY, expand_delta_checkpoint, is_delta_checkpoint


def merge(delta_path: str, out_path: str, base: str = None, keep_training_state: bool = False) -> dict:
    if not osp.isfile(delta_path):
        raise FileNotFoundError(f'delta checkpoint {delta_path} does not exist')
    delta = torch.load(delta_path, map_location='cpu', weights_only=False)
    if not is_delta_checkpoint(delta):
        raise ValueError(f'{delta_path} is not an mmpeft delta checkpoint (no meta["{DELTA_KEY}"])')
    full = expand_delta_checkpoint(delta, delta_path=delta_path, base=base)
    out = dict(meta=dict(full['meta']), state_dict=full['state_dict'])
    out['meta'][DELTA_KEY] = dict(full['meta'][DELTA_KEY], merged_from=osp.abspath(delta_path))
    if keep_training_state:
        for k in ('optimizer', 'param_schedulers', 'message_hub'):
            if k in full:
                out[k] = full[k]
    save_checkpoint(out, out_path)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description='Merge base weights and an mmpeft delta checkpoint')
    p.add_argument('delta', help='delta checkpoint written with DeltaCheckpointHook')
    p.add_argument('out', help='where to write the full checkpoint')
    p.add_argument('--base', help='base weights (default: the one recorded in the delta)')
    p.add_argument('--keep-training-state', action='store_true',
                   help='also copy optimizer / scheduler / message-hub state')
    args = p.parse_args()
    out = merge(args.delta, args.out, args.base, args.keep_training_state)
    print(f'wrote {args.out}: {len(out["state_dict"])} tensors '
          f'(base {out["meta"][DELTA_KEY]["base"]} + delta {args.delta})')


if __name__ == '__main__':
    main()
