"""Convert a checkpoint of the HST authors' released model (ViT_HSN) to an mmpeft HSTViT classifier.

    python tools/model_converters/hst_official_to_mmpeft.py SRC DST [--config CONFIG] [--cfg-options k=v ...]
        [--trust-checkpoints]

SRC is a file saved by the authors' training script: a dict with ``state_dict`` or ``model`` (DeiT /
timm style), or a bare state dict, in the released key layout (``m_patch_embed1.*``, ``m_block{j}.*``,
``T_Bridge_{j}.*``, ``m_embeddings.<i>`` ... beside timm's ViT keys; see
:mod:`mmpeft.backbones.hst_official_checkpoint`). Every key is used; a leftover or missing key is an
error naming it. The architecture read off the tensors is printed, to compare with your config.

With ``--config`` (e.g. ``configs/hst/vtab1k/vit-b_hst_vtab1k-cifar100.py``) the config's model is built and
the converted weights must load into it strictly: a missing / unexpected key or a shape mismatch is
an error naming the keys, the shapes and the config option to change (``model.head.num_classes``,
``model.backbone.embed_dims`` ...). The model is not initialised, so its ``init_cfg`` file need not exist.

DST is written atomically as an mmengine checkpoint ``{'meta': {...}, 'state_dict': ...}`` with
``backbone.`` / ``head.fc.`` keys, for ``tools/test.py CONFIG DST`` or ``load_from``.

Files saved by a DeiT-style script also pickle the run's ``args`` (an ``argparse.Namespace``), which the
safe loader refuses; if you trust the file, pass ``--trust-checkpoints``.
"""
import argparse
import os.path as osp
from typing import Dict, List, Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import save_checkpoint

import mmpeft  # noqa: F401  (registers HSTViT; atomic checkpoint saving)
from mmpeft.backbones.hst_official_checkpoint import (
    EXPECTED_LAYOUT,
    convert_hst_official,
    format_config_hints,
    hst_official_config_hints,
    is_hst_official,
)
from mmpeft.registry import MODELS
from mmpeft.utils.checkpoint_io import CheckpointMismatchError, load_checkpoint_file, state_dict_of

CONVERTER = 'tools/model_converters/hst_official_to_mmpeft.py'

# (key prefix, the config option that decides those tensors' keys and shapes), first match wins
_OPTIONS = (
    ('head.', 'model.head (num_classes = the checkpoint\'s class count, in_channels = its last embed_dims; '
              "type='LinearClsHead')"),
    ('backbone.vit.pos_embed', 'model.backbone.vit_kwargs.img_size / patch_size'),
    ('backbone.vit.blocks.', 'model.backbone.vit_name / vit_kwargs (depth, embed_dim)'),
    ('backbone.vit.', 'model.backbone.vit_name / vit_kwargs (embed_dim, patch_size)'),
    ('backbone.meta_tokens', 'model.backbone.num_meta_tokens and the ViT depth / embed_dim'),
    ('backbone.fc_norm.', "model.backbone.embed_dims (its last width) / out_type='pooled' (the released "
                          "model's BatchNorm1d before the head)"),
    ('backbone.side_network.stages.', 'model.backbone.embed_dims / depths / mlp_ratio'),
    ('backbone.', 'model.backbone.embed_dims / depths (and the ViT embed_dim for the bridge)'),
)


def _option(key: str) -> str:
    return next((opt for prefix, opt in _OPTIONS if key.startswith(prefix)), 'the model as a whole')


def _preview(keys: List[str], n: int = 10) -> str:
    return ', '.join(keys[:n]) + (f' ... ({len(keys)} in all)' if len(keys) > n else '')


def check_fits(model: torch.nn.Module, state: Dict[str, torch.Tensor], config: str) -> None:
    """Raise :class:`CheckpointMismatchError` naming each missing / unexpected / mis-shaped key with the
    config option behind it, then load ``state`` into ``model`` strictly."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [k for k in want if k in state and tuple(want[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        by_option: Dict[str, List[str]] = {}
        for k in shapes:
            by_option.setdefault(_option(k), []).append(
                f'{k} (checkpoint {tuple(state[k].shape)}, model {tuple(want[k].shape)})')
        for k in missing:
            by_option.setdefault(_option(k), []).append(f'{k} (missing from the checkpoint)')
        for k in unexpected:
            by_option.setdefault(_option(k), []).append(f'{k} (not in the model)')
        lines = [f'  change {opt}: {_preview(items)}' for opt, items in by_option.items()]
        raise CheckpointMismatchError(
            f'the converted checkpoint does not fit the model of {config} ({len(shapes)} shape mismatches, '
            f'{len(missing)} missing, {len(unexpected)} unexpected keys):\n' + '\n'.join(lines)
            + '\nSet these options in the config (or --cfg-options) to the architecture printed above.')
    model.load_state_dict(state, strict=True)


def build_model(config: str, cfg_options: Optional[dict]) -> torch.nn.Module:
    """The config's model, built (custom_imports applied) but not initialised: no pretrained file is read."""
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file {config} does not exist')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', None) or 'mmpretrain')
    return MODELS.build(cfg.model)


def convert_file(src: str, dst: str, config: Optional[str] = None, cfg_options: Optional[dict] = None,
                 trusted: Optional[bool] = None) -> dict:
    """Convert ``src`` to ``dst`` (checked against ``config`` when given); returns what was written."""
    if osp.exists(dst) and osp.exists(src) and osp.samefile(src, dst):
        raise ValueError(f'DST {dst} is SRC {src} (the same file): writing there would destroy the source. '
                         f'Give another DST, e.g. {osp.splitext(dst)[0]}_mmpeft.pth')
    state = state_dict_of(load_checkpoint_file(src, trusted=trusted), name=src)
    if not is_hst_official(state):
        raise ValueError(f'{src} is not a checkpoint of the HST released model: it has no m_patch_embed1.* and '
                         f'T_Bridge_1.* keys (its keys start {sorted(state)[:8]}). Expected {EXPECTED_LAYOUT}')
    hints = hst_official_config_hints(state)
    print(format_config_hints(hints))
    converted = convert_hst_official(state, backbone_prefix='backbone.', head_prefix='head.fc.')
    if config is not None:
        check_fits(build_model(config, cfg_options), converted, config)
    result = dict(meta=dict(hst_official=dict(source=osp.abspath(src), converter=CONVERTER,
                                              config=None if config is None else osp.abspath(config),
                                              architecture=hints)),
                  state_dict=converted)
    save_checkpoint(result, dst)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('src', help="checkpoint saved by the HST authors' code (ViT_HSN)")
    p.add_argument('dst', help='where to write the mmpeft checkpoint')
    p.add_argument('--config', help='an mmpeft HST classification config: the result must load into its model strictly')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, k=v')
    p.add_argument('--trust-checkpoints', action='store_true',
                   help='load SRC with weights_only=False (it may run code), e.g. for a file that pickles its args')
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    result = convert_file(args.src, args.dst, args.config, args.cfg_options,
                          trusted=True if args.trust_checkpoints else None)
    checked = f', loads strictly into the model of {args.config}' if args.config else ''
    print(f'wrote {args.dst}: {len(result["state_dict"])} tensors{checked}')


if __name__ == '__main__':
    main()
