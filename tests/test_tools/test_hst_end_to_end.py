"""End to end: ``tools/train.py`` then ``tools/test.py`` with the real HST configs on tiny generated data.

The configs are ``configs/hst/mask-rcnn_vit-b_hst_1x_coco.py`` (COCO format) and
``configs/hst/upernet_vit-b_hst_160k_ade20k-512x512.py`` (ADE20K layout), read with
``Config.fromfile`` and shrunk as a user with a small machine would: the same classes with a 4-layer
ViT, side-network dims ``[8, 16, 16, 32]``, necks / heads with 16-32 channels, 64-96 pixel images, two
training iterations without validation, no pretrained file. The shrunk config is dumped to a file
and both tools run on it as subprocesses.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import torch
from mmengine.config import Config

from mmpeft_testing import ROOT
from tiny_ade import generate_tiny_ade
from tiny_coco import CATEGORIES, generate_tiny_coco

CFG_DIR = osp.join(ROOT, 'configs', 'hst')
HST_DIMS = [8, 16, 16, 32]
SMALL_CHANNELS = {256: 16, 512: 32, 1024: 32}
CHANNEL_KEYS = ('in_channels', 'out_channels', 'feat_channels', 'channels', 'fc_out_channels',
                'conv_out_channels')


def _shrink(node):
    """Neck / head widths to a few channels, proposal counts to a few dozen (same code paths)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in CHANNEL_KEYS and isinstance(v, int) and v in SMALL_CHANNELS:
                node[k] = SMALL_CHANNELS[v]
            elif k in ('nms_pre', 'max_per_img') and isinstance(v, int) and v >= 100:
                node[k] = 50
            elif k == 'num' and isinstance(v, int) and v >= 256:
                node[k] = 32
            else:
                _shrink(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            _shrink(v)


def _common(cfg: Config, work_dir: str, vit: dict, iters: int = 2) -> None:
    bb = cfg.model.backbone
    assert bb.type == 'HSTViT'
    bb.update(vit_kwargs=vit, embed_dims=HST_DIMS, num_heads=[1, 1, 2, 2], init_cfg=None)
    for key in [k for k in cfg.model if k not in ('backbone', 'data_preprocessor', 'type')]:
        _shrink(cfg.model[key])
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=10 ** 6)
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=iters)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=iters)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1, log_metric_by_epoch=False)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].update(num_workers=0, persistent_workers=False)
    cfg.train_dataloader.batch_size = 2


def tiny_mask_rcnn_cfg(data_root: str, work_dir: str) -> Config:
    cfg = Config.fromfile(osp.join(CFG_DIR, 'mask-rcnn_vit-b_hst_1x_coco.py'))
    _common(cfg, work_dir, dict(depth=4, embed_dim=32, num_heads=2, img_size=64))
    cfg.model.neck.in_channels = HST_DIMS
    cfg.model.roi_head.bbox_head.num_classes = len(CATEGORIES)
    cfg.model.roi_head.mask_head.num_classes = len(CATEGORIES)
    for split, key in (('train', 'train_dataloader'), ('val', 'val_dataloader'), ('val', 'test_dataloader')):
        ds = cfg[key].dataset
        ds.update(data_root=data_root, ann_file=f'annotations/instances_{split}.json',
                  data_prefix=dict(img=f'{split}/'), metainfo=dict(classes=CATEGORIES))
        for t in ds.pipeline:
            if t['type'] == 'Resize':
                t['scale'] = (96, 96)
            if t['type'] == 'RandomFlip':
                t['prob'] = 0.0
    for key in ('val_evaluator', 'test_evaluator'):
        cfg[key].ann_file = osp.join(data_root, 'annotations', 'instances_val.json')
    return cfg


def tiny_upernet_cfg(data_root: str, work_dir: str) -> Config:
    cfg = Config.fromfile(osp.join(CFG_DIR, 'upernet_vit-b_hst_160k_ade20k-512x512.py'))
    # a wide ViT next to tiny heads: the frozen weights are most of the model, as with ViT-B
    _common(cfg, work_dir, dict(depth=4, embed_dim=192, num_heads=3, img_size=64))
    cfg.model.decode_head.in_channels = HST_DIMS
    cfg.model.auxiliary_head.in_channels = HST_DIMS[cfg.model.auxiliary_head.in_index]
    cfg.model.data_preprocessor.size = (64, 64)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds = cfg[key].dataset
        ds.data_root = data_root
        for t in ds.pipeline:
            if t['type'] in ('RandomResize', 'Resize'):
                t['scale'] = (128, 64)
            if t['type'] == 'RandomCrop':
                t['crop_size'] = (64, 64)
            if t['type'] == 'RandomFlip':
                t['prob'] = 0.0
    return cfg


def _run(args, cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    res = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, f'{args[0]} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}'
    return res


def train_then_test(cfg: Config, tmp_path):
    """Dump ``cfg``, run both tools, return (checkpoint path, metrics dict, test stdout+stderr)."""
    work = cfg.work_dir
    cfg_path = str(tmp_path / 'tiny_cfg.py')
    cfg.dump(cfg_path)
    _run([osp.join(ROOT, 'tools', 'train.py'), cfg_path, '--work-dir', work, '--no-validate'], ROOT)
    ckpt = osp.join(work, f'iter_{cfg.train_cfg.max_iters}.pth')
    assert osp.isfile(ckpt), os.listdir(work)
    out = str(tmp_path / 'metrics.json')
    res = _run([osp.join(ROOT, 'tools', 'test.py'), cfg_path, ckpt, '--work-dir', str(tmp_path / 'test'),
                '--out', out], ROOT)
    with open(out) as f:
        metrics = json.load(f)
    return ckpt, metrics, res.stdout + res.stderr


def test_mask_rcnn_hst_train_then_test_on_tiny_coco(tmp_path):
    data = generate_tiny_coco(str(tmp_path / 'coco'), num_train=4, num_val=2, size=(96, 96))
    cfg = tiny_mask_rcnn_cfg(data, str(tmp_path / 'work'))
    ckpt, metrics, log = train_then_test(cfg, tmp_path)

    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    sd = state['state_dict']
    assert state['meta']['iter'] == 2
    # the trained model is the shrunk HST Mask R-CNN: side network at the given dims, 3 classes
    assert sd['backbone.side_network.norms.3.weight'].shape == (HST_DIMS[3],)
    assert sd['backbone.meta_tokens'].shape == (4, 1, 32)
    assert sd['roi_head.bbox_head.fc_cls.weight'].shape[0] == len(CATEGORIES) + 1
    assert sd['roi_head.mask_head.conv_logits.weight'].shape[0] == len(CATEGORIES)

    for name in ('bbox', 'segm'):
        for suffix in ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l'):
            v = metrics[f'coco/{name}_{suffix}']
            assert v == -1.0 or 0.0 <= v <= 1.0, (name, suffix, v)
        assert re.search(rf'coco/{name}_mAP: -?\d', log), log[-2000:]
    assert 'Epoch(test) [2/2]' in log  # both validation images evaluated


def test_upernet_hst_train_then_test_on_tiny_ade20k_with_delta_checkpoint(tmp_path):
    data = generate_tiny_ade(str(tmp_path / 'ade'), num_train=4, num_val=2, size=(64, 64))
    cfg = tiny_upernet_cfg(data, str(tmp_path / 'work'))
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='DeltaCheckpointHook')]
    ckpt, metrics, log = train_then_test(cfg, tmp_path)

    assert 0.0 <= metrics['mIoU'] <= 100.0 and 0.0 <= metrics['aAcc'] <= 100.0
    assert re.search(r'mIoU: \d', log), log[-2000:]
    # reduce_zero_label: PNG values 1-3 are ADE classes 0-2 (wall, building, sky), which the
    # validation images hold (a per-class accuracy), while e.g. floor (PNG value 4) is absent (nan)
    for name in ('wall', 'building', 'sky'):
        assert re.search(rf'\|\s+{name}\s+\|\s*[\d.]+\s*\|\s*[\d.]+\s*\|', log), name
    assert re.search(r'\|\s+floor\s+\|\s*nan\s*\|\s*nan\s*\|', log)
    # tools/test.py expanded the delta with the base weights the hook wrote (a delta loads strictly)
    base = osp.join(cfg.work_dir, 'base_weights.pth')
    assert f'Load checkpoint from {ckpt}' in log
    delta = torch.load(ckpt, map_location='cpu', weights_only=False)
    full = torch.load(base, map_location='cpu', weights_only=False)['state_dict']
    meta = delta['meta']['mmpeft_delta']
    trainable = set(meta['trainable'])
    assert set(delta['state_dict']) == trainable | set(meta['buffers'])
    assert not any(k.startswith('backbone.vit.') and not re.search(r'\.norm[12]\.', k)
                   for k in trainable)
    assert set(meta['frozen_shapes']) | set(delta['state_dict']) == set(full)
    frozen = sum(full[k].numel() for k in meta['frozen_shapes'])
    assert frozen > 3 * sum(v.numel() for v in delta['state_dict'].values())
    # ... and the file is much smaller than the model's full weights, optimizer state included
    assert osp.getsize(ckpt) < 0.35 * osp.getsize(base)
