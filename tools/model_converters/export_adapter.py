"""Export a trained PEFT model as a shareable adapter: ``adapter.safetensors`` + ``adapter_config.json``.

    python tools/model_converters/export_adapter.py CONFIG CKPT OUT_DIR [--cfg-options K=V ...]

CONFIG is the training config, CKPT its checkpoint: a full one, or a delta checkpoint (its base is
found and verified by hash as for any delta load; the buffers it records as changed are exported
too). The model is built from CONFIG, CKPT is loaded strictly (through mmpeft's safe loader: no
pickled code runs), and its trainable tensors are written to OUT_DIR with the model config, the
method config(s) and the hash of the base weights (see :mod:`mmpeft.utils.adapter_io`). Attach it to
a model built from the same config with ``init_cfg=dict(type='PEFTAdapter', path=OUT_DIR)`` on the
model, or ``mmpeft.utils.adapter_io.load_adapter(model, OUT_DIR)``, or evaluate it directly with
``python tools/test.py CONFIG OUT_DIR`` (``--adapter-base BASE.pth`` for an explicit base) or
``load_from=OUT_DIR``.
"""
import argparse
import os.path as osp
import re
from typing import List, Optional, Tuple

from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

import mmpeft  # noqa: F401  (registers mmpeft classes; safe loading of mmengine checkpoints)
from mmpeft.registry import MODELS
from mmpeft.utils.adapter_io import CONFIG_NAME, WEIGHTS_NAME, export_adapter
from mmpeft.utils.checkpoint_io import CheckpointMismatchError, load_checkpoint_file, state_dict_of
from mmpeft.utils.delta import DELTA_KEY, expand_delta_checkpoint, is_delta_checkpoint


def export(config: str, checkpoint: str, out_dir: str, cfg_options: Optional[dict] = None) -> dict:
    """Build the model of ``config``, load ``checkpoint`` strictly, write the adapter; returns its config."""
    cfg, model, extra = load_trained(config, checkpoint, cfg_options)
    return export_adapter(model, out_dir, cfg, extra_keys=extra)


def load_trained(config: str, checkpoint: str, cfg_options: Optional[dict] = None) -> Tuple[Config, object, List[str]]:
    """``(cfg, model, buffers a delta checkpoint records as changed)``: the model of ``config`` with
    ``checkpoint`` (full or delta) loaded strictly."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmengine') or 'mmengine')
    model = MODELS.build(cfg.model)  # no init_weights: the checkpoint provides every weight
    ckpt = load_checkpoint_file(checkpoint)
    extra: List[str] = []
    if is_delta_checkpoint(ckpt):
        extra = list(ckpt['meta'][DELTA_KEY].get('buffers', []))
        ckpt = expand_delta_checkpoint(ckpt, delta_path=checkpoint)
    sd = {re.sub(r'^module\.', '', k): v for k, v in state_dict_of(ckpt, f'checkpoint {checkpoint}').items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointMismatchError(
            f'checkpoint {checkpoint} does not fit the model of {config}: missing keys '
            f'{sorted(missing)[:10]}, unexpected keys {sorted(unexpected)[:10]}. Give the config it was '
            f'trained with')
    return cfg, model, extra


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description='Export the trainable tensors of a PEFT model as a safetensors adapter')
    p.add_argument('config', help='training config')
    p.add_argument('checkpoint', help='trained checkpoint (full or mmpeft delta)')
    p.add_argument('out_dir', help=f'folder to write {WEIGHTS_NAME} and {CONFIG_NAME} to')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    out = export(args.config, args.checkpoint, args.out_dir, args.cfg_options)
    size = osp.getsize(osp.join(args.out_dir, WEIGHTS_NAME))
    print(f'wrote {osp.join(args.out_dir, WEIGHTS_NAME)} ({len(out["tensors"])} tensors, '
          f'{out["trainable_count"]} trainable parameters, {size / 1e6:.2f} MB) and '
          f'{osp.join(args.out_dir, CONFIG_NAME)} (base {out["base_hash"]})')


if __name__ == '__main__':
    main()
