"""Evaluate a checkpoint (full or mmpeft delta) with any toolbox config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--cfg-options k=v ...] [--tta]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [same options]

A delta checkpoint (trainable parameters only) is expanded to base + delta when loaded. The
checkpoint must fit the model exactly (missing / unexpected keys are an error, not metrics of a
half-loaded model); ``--non-strict`` loads only the keys that match.

CHECKPOINT may also be an adapter folder (``adapter.safetensors`` + ``adapter_config.json``, written by
``tools/model_converters/export_adapter.py``; or either of its files): the model built from CONFIG gets
its base weights from its own initialisation (``init_weights``: the pretrained file(s) its ``init_cfg``
names), or from ``--adapter-base BASE.pth`` (a full or delta checkpoint of the model, e.g. the
``base_weights.pth`` of the training work_dir; the config key ``adapter_base_checkpoint``), and then the
adapter is attached, checked (method, tensor names / shapes, hash of the base weights) and read
without unpickling anything (:mod:`mmpeft.utils.adapter_io`).

``--tta``: test-time augmentation as the toolboxes' own test tools do it: the test set is read with the
config's ``tta_pipeline`` and the model is wrapped in the config's ``tta_model`` (``module=`` the
model). For mmseg configs on the ADE20K base these are mmseg's ``SegTTAModel`` (softmax scores of all
views averaged, then argmax) and the ADE20K ``TestTimeAug`` pipeline: image ratios 0.5, 0.75, 1.0, 1.25,
1.5, 1.75 times each without and with a horizontal flip (12 views; each view's scores are flipped back
and resized to the original image before averaging). That is HST Table 5's "+MS" protocol as mmseg 1.x
runs it; note that mmseg 1.x scales the *original* image by each ratio, where mmseg 0.x (which the
Swin-era papers used) scaled the single-scale test size (2048, 512). For mmdet configs ``tta_model``
is e.g. ``DetTTAModel``. A config without ``tta_model`` or ``tta_pipeline`` is an error naming the key
(mmdet's tool would fall back to a flip-only default; here the augmentation is always the config's).
Write its metrics next to the single-scale ones, e.g. ``--out WORK_DIR/test_metrics_tta.json``, which
``tools/analysis_tools/paper_table.py`` reads for the +MS column.
"""
import argparse
import copy
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.dist import is_main_process
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmpeft  # noqa: F401  (registers classes, applies fixes)
from mmpeft.utils.adapter_io import BASE_CFG_KEY, is_adapter_path, not_an_adapter_message
from mmpeft.utils.checkpoint_io import TRUSTED_ENV, strict_model_loading
from mmpeft.utils.runner_cfg import load_runner_config


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Test a model (mmpeft)')
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help='checkpoint file (full or delta), or an adapter folder')
    p.add_argument('--adapter-base', metavar='BASE',
                   help=f'with an adapter: full (or delta) checkpoint holding the base weights the adapter was '
                        f'trained on (default: the model\'s own pretrained initialisation); sets {BASE_CFG_KEY}')
    p.add_argument('--work-dir', help='where logs and metrics go')
    p.add_argument('--out', help='dump the metrics (json) to this file')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys, k=v')
    p.add_argument('--non-strict', action='store_true',
                   help='load only the checkpoint keys that match the model; the rest keep their initial values')
    p.add_argument('--trust-checkpoints', action='store_true',
                   help=f'load checkpoints with weights_only=False (they may run code; same as {TRUSTED_ENV}=1)')
    p.add_argument('--tta', action='store_true',
                   help="test-time augmentation with the config's tta_pipeline and tta_model "
                        '(multi-scale + flip on ADE20K)')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if args.trust_checkpoints:
        os.environ[TRUSTED_ENV] = '1'
    return args


TTA_HINTS = {
    'mmseg': "mmseg's configs get tta_model = dict(type='SegTTAModel') from _base_/default_runtime.py and "
             "tta_pipeline from their dataset base (e.g. _base_/datasets/ade20k.py)",
    'mmdet': "e.g. tta_model = dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), "
             "max_per_img=100)) and a tta_pipeline ending in dict(type='TestTimeAug', transforms=[...]) "
             "(mmdet's configs/retinanet/retinanet_tta.py is an example)",
}


def apply_tta(cfg: Config, config_name: str) -> Config:
    """Turn ``cfg`` into its test-time-augmentation form, in place, as mmseg's / mmdet's ``tools/test.py
    --tta`` do: ``test_dataloader.dataset.pipeline = tta_pipeline`` and ``model = tta_model`` with
    ``module=`` the original model. ``config_name`` names the config in errors. Returns ``cfg``."""
    missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
    if missing:
        scope = cfg.get('default_scope', None)
        hint = TTA_HINTS.get(scope, 'add them as the toolbox of this config documents')
        raise ValueError(f'--tta: config {config_name} defines no {" and no ".join(missing)}; {hint}')
    dataset = cfg.test_dataloader.dataset
    if 'pipeline' not in dataset:
        raise ValueError(f'--tta: test_dataloader.dataset of config {config_name} (type {dataset.get("type")}) has no '
                       f'pipeline to replace with tta_pipeline; test with a dataset that reads its own pipeline')
    dataset.pipeline = copy.deepcopy(cfg.tta_pipeline)
    tta_model = ConfigDict(copy.deepcopy(cfg.tta_model))
    tta_model.module = cfg.model
    cfg.model = tta_model
    return cfg


def build_test_config(config: str, checkpoint: str, cfg_options: Optional[dict] = None,
                      work_dir: Optional[str] = None, launcher: str = 'none', tta: bool = False,
                      adapter_base: Optional[str] = None) -> Config:
    """The runner config this tool tests with: ``config`` with ``--cfg-options``, work dir and launcher
    applied, ``load_from = checkpoint`` (no resume), ``adapter_base_checkpoint = adapter_base`` if
    given, and with ``tta`` the TTA model and pipeline (:func:`apply_tta`)."""
    cfg = load_runner_config(config, cfg_options, work_dir, launcher)
    cfg.load_from = checkpoint
    cfg.resume = False
    if adapter_base is not None:
        cfg[BASE_CFG_KEY] = adapter_base
    if tta:
        apply_tta(cfg, config)
    return cfg


def main() -> None:
    args = parse_args()
    if osp.isdir(args.checkpoint):
        problem = not_an_adapter_message(args.checkpoint)
        if problem is not None:
            raise FileNotFoundError(problem)
    elif not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint file {args.checkpoint} does not exist')
    if args.adapter_base is not None:
        if not is_adapter_path(args.checkpoint):
            raise ValueError(f'--adapter-base is for an adapter folder; {args.checkpoint} is a checkpoint file '
                             f'(a delta checkpoint finds its base itself: merge it with another base with '
                             f'tools/model_converters/merge_delta.py DELTA OUT --base BASE)')
        if not osp.isfile(args.adapter_base):
            raise FileNotFoundError(f'--adapter-base file {args.adapter_base} does not exist')
    cfg = build_test_config(args.config, args.checkpoint, args.cfg_options, args.work_dir, args.launcher, args.tta,
                            args.adapter_base)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    if args.non_strict:
        metrics = runner.test()
    else:
        fix = ('Test with the config this checkpoint was trained with, or pass --non-strict to load only the '
               'matching keys (the others keep their initial values, so the metrics are not those of the checkpoint)')
        with strict_model_loading(args.checkpoint, fix):
            metrics = runner.test()
    if args.out and is_main_process():
        import json
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump({k: float(v) if hasattr(v, '__float__') else v for k, v in metrics.items()}, f, indent=2)
    print('\n'.join(f'{k}: {v}' for k, v in metrics.items()))


if __name__ == '__main__':
    main()
