"""Write a full checkpoint from base weights + an mmpeft delta (trainable-only) checkpoint.

    python tools/model_converters/merge_delta.py DELTA OUT [--base BASE] [--keep-training-state]

BASE defaults to the base recorded in the delta (``meta['mmpeft_delta']['base']``, or a file of that
name beside DELTA). The base must hold exactly the frozen keys the delta was trained on, with the
recorded shapes (else the error names the missing / unexpected / mismatched keys), and its tensors
must hash to the hash recorded in the delta: a base rewritten since, e.g. by another training in
the same work_dir, is refused, naming the files and hashes. OUT must not be DELTA or BASE (also
through links or other relative paths): writing over an input would destroy it. The output holds
``meta`` and the merged ``state_dict`` (plus optimizer / scheduler state with
``--keep-training-state``) and is written atomically.
"""
import argparse
import os.path as osp
from typing import List, Optional

from mmengine.runner.checkpoint import save_checkpoint

import mmpeft  # noqa: F401  (atomic saving, safe loading of mmengine checkpoints)
from mmpeft.utils.checkpoint_io import load_checkpoint_file
from mmpeft.utils.delta import DELTA_KEY, expand_delta_checkpoint, is_delta_checkpoint


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (symlinks, hard links, other relative spellings)."""
    if osp.realpath(a) == osp.realpath(b):
        return True
    return osp.exists(a) and osp.exists(b) and osp.samefile(a, b)


def _refuse_overwrite(out_path: str, input_path: str, what: str, delta_path: str) -> None:
    if _same_file(out_path, input_path):
        raise ValueError(f'merge_delta: OUT {out_path} is the {what} {input_path} (the same file); '
                         f'writing the merged checkpoint there would destroy that input. Give '
                         f'another OUT path, e.g. {osp.splitext(delta_path)[0]}_merged.pth')


def merge(delta_path: str, out_path: str, base: Optional[str] = None,
          keep_training_state: bool = False) -> dict:
    """Write base + delta as a full checkpoint to ``out_path``; returns what was written."""
    if not osp.isfile(delta_path):
        raise FileNotFoundError(f'delta checkpoint {delta_path} does not exist')
    _refuse_overwrite(out_path, delta_path, 'delta checkpoint', delta_path)
    if base is not None:
        _refuse_overwrite(out_path, base, 'base weights', delta_path)
    # an mmengine training checkpoint (HistoryBuffer, numpy scalars ...): not weights-only loadable
    delta = load_checkpoint_file(delta_path)
    if not is_delta_checkpoint(delta):
        raise ValueError(f'{delta_path} is not an mmpeft delta checkpoint (no meta["{DELTA_KEY}"])')
    full = expand_delta_checkpoint(delta, delta_path=delta_path, base=base)
    _refuse_overwrite(out_path, full['meta'][DELTA_KEY]['base'], 'base weights', delta_path)
    out = dict(meta=dict(full['meta']), state_dict=full['state_dict'])
    out['meta'][DELTA_KEY] = dict(full['meta'][DELTA_KEY], merged_from=osp.abspath(delta_path))
    if keep_training_state:
        for k in ('optimizer', 'param_schedulers', 'message_hub'):
            if k in full:
                out[k] = full[k]
    save_checkpoint(out, out_path)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description='Merge base weights and an mmpeft delta checkpoint')
    p.add_argument('delta', help='delta checkpoint written with DeltaCheckpointHook')
    p.add_argument('out', help='where to write the full checkpoint (not DELTA or BASE)')
    p.add_argument('--base', help='base weights (default: the one recorded in the delta)')
    p.add_argument('--keep-training-state', action='store_true',
                   help='also copy optimizer / scheduler / message-hub state')
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    out = merge(args.delta, args.out, args.base, args.keep_training_state)
    print(f'wrote {args.out}: {len(out["state_dict"])} tensors '
          f'(base {out["meta"][DELTA_KEY]["base"]} + delta {args.delta})')


if __name__ == '__main__':
    main()
