"""Convert an mmpretrain (or mmseg) ViT checkpoint to timm's key layout.

HSTViT / ViTPyramid load mmpretrain and mmseg ViT checkpoints directly (``checkpoint_layout='auto'``);
this tool writes a plain timm state dict, e.g. to use the weights with timm itself::

    python tools/model_converters/mmpretrain_vit_to_timm.py \\
        vit-base-p16_in21k-pre_3rdparty_in1k-384px.pth pretrain/vit-b16_timm.pth

The input may be a bare backbone state dict or a classifier checkpoint (``state_dict`` with
``backbone.`` / ``head.`` keys); only the backbone is written. Keys with no timm equivalent are an
error naming them.
"""
import argparse
import os
import os.path as osp

import torch

from mmpeft.utils.checkpoint_io import load_checkpoint_file


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='mmpretrain / mmseg ViT checkpoint')
    parser.add_argument('dst', help='where to write the timm state dict')
    parser.add_argument('--layout', default='auto', choices=['auto', 'mmpretrain', 'mmseg'],
                        help='layout of the source (default: detect from the keys)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    from mmpeft.backbones.vit_checkpoint import to_timm_state
    ckpt = load_checkpoint_file(args.src)
    state, layout, dropped = to_timm_state(ckpt, args.layout, args.src)
    if layout not in ('mmpretrain', 'mmseg'):
        raise SystemExit(f'{args.src} is already in {layout} layout; nothing to convert')
    folder = osp.dirname(osp.abspath(args.dst))
    os.makedirs(folder, exist_ok=True)
    torch.save(state, args.dst)
    print(f'{args.src} ({layout}) -> {args.dst}: {len(state)} tensors in timm layout'
          + (f', {len(dropped)} non-backbone keys left out' if dropped else ''))


if __name__ == '__main__':
    main()
