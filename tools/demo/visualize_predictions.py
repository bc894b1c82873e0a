"""Write PNGs of a multi-task model's four predicted maps beside the input and the ground truth.

    python tools/demo/visualize_predictions.py CONFIG CHECKPOINT [--out DIR] [--num N] [--split val]
    python tools/demo/visualize_predictions.py CONFIG --adapter ADAPTER_DIR [...]

One PNG per image (``<img_id>.png``) and ``grid.png`` with all of them: columns are the input, then
ground truth / prediction for semantic segmentation, human parts, saliency and surface normals
(normals drawn as RGB = (n + 1) / 2; invalid pixels black). Any checkpoint mmengine loads works,
delta checkpoints included. ``--adapter DIR`` instead of a checkpoint: the model of CONFIG gets its
base weights from its own initialisation (the pretrained file its ``init_cfg`` names), then the adapter
that ``tools/model_converters/export_adapter.py`` wrote (``adapter.safetensors`` +
``adapter_config.json``) is attached, checked by :func:`mmpeft.utils.adapter_io.load_adapter`.
"""
import argparse
import os
import os.path as osp
from typing import List, Optional

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate
from mmengine.registry import DATASETS, MODELS, init_default_scope
from mmengine.runner import load_checkpoint
from PIL import Image, ImageDraw

import mmpeft  # noqa: F401
from mmpeft.datasets.pascal_context_mt import voc_palette
from mmpeft.utils.adapter_io import load_adapter

TASK_TITLES = dict(semseg='semseg', parts='parts', sal='saliency', normals='normals')


def _labels(lab: np.ndarray, palette: np.ndarray) -> np.ndarray:
    out = palette[np.clip(lab, 0, len(palette) - 1)]
    out[lab == 255] = (255, 255, 255)  # ignored pixels white
    return out


def render(task: str, field: np.ndarray, palette: np.ndarray, gt: bool) -> np.ndarray:
    """(C, H, W) field of one task -> (H, W, 3) uint8 picture."""
    if task in ('semseg', 'parts'):
        return _labels(field[0].astype(np.int64), palette).astype(np.uint8)
    if task == 'sal':
        v = field[0].astype(np.float32)
        img = (np.clip(v, 0, 1) * 255).astype(np.uint8)
        img = np.repeat(img[..., None], 3, axis=-1)
        if gt:
            img[field[0] == 255] = (255, 0, 0)
        return img
    n = field.astype(np.float32)
    norm = np.linalg.norm(n, axis=0, keepdims=True)
    valid = norm[0] > 1e-6
    n = n / np.maximum(norm, 1e-6)
    img = ((n.transpose(1, 2, 0) + 1) / 2 * 255).clip(0, 255).astype(np.uint8)
    img[~valid] = 0
    return img


def build_model(cfg: Config, checkpoint: Optional[str] = None, adapter: Optional[str] = None) -> torch.nn.Module:
    """The model of ``cfg`` in eval mode, with ``checkpoint`` loaded strictly, or on its pretrained base
    weights (``init_weights``) with the adapter folder ``adapter`` attached (checked)."""
    if (checkpoint is None) == (adapter is None):
        raise ValueError('give either a checkpoint or an adapter folder (--adapter), not both or neither')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    if adapter is not None:
        model.init_weights()
        load_adapter(model, adapter, cfg)
    else:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    return model.eval()


def predict_rows(cfg: Config, checkpoint: Optional[str], num: int, split: str,
                 adapter: Optional[str] = None) -> List[dict]:
    model = build_model(cfg, checkpoint, adapter)
    loader = cfg.get(f'{split}_dataloader')
    if loader is None:
        raise KeyError(f'config has no {split}_dataloader')
    dataset = DATASETS.build(loader.dataset)
    rows = []
    for i in range(min(num, len(dataset))):
        batch = pseudo_collate([dataset[i]])
        with torch.no_grad():
            sample = model.test_step(batch)[0]
        rows.append(dict(sample=sample, img_path=sample.metainfo['img_path'],
                         img_id=sample.metainfo.get(
                             'img_id', osp.splitext(osp.basename(sample.metainfo['img_path']))[0])))
    return rows


def compose(row: dict, tasks: List[str], scale: int = 3) -> np.ndarray:
    palette = np.array(voc_palette(256), dtype=np.uint8)
    sample = row['sample']
    img = np.array(Image.open(row['img_path']).convert('RGB'))
    h, w = img.shape[:2]
    tiles = [img]
    for t in tasks:
        for kind in ('gt', 'pred'):
            key = f'{kind}_{t}'
            if key in sample:
                field = sample.get(key).data.cpu().numpy()
                tile = render(t, field, palette, kind == 'gt')
            else:  # e.g. no ground truth for this task
                tile = np.full((h, w, 3), 128, np.uint8)
            tiles.append(tile[:h, :w])
    strip = np.concatenate([np.pad(t, ((0, 0), (0, 2), (0, 0)), constant_values=255) for t in tiles], axis=1)
    return np.kron(strip, np.ones((scale, scale, 1), np.uint8)) if scale > 1 else strip


def header(width: int, tasks: List[str], tile_w: int) -> np.ndarray:
    img = Image.new('RGB', (width, 14), 'white')
    draw = ImageDraw.Draw(img)
    titles = ['input'] + [f'{TASK_TITLES[t]} {k}' for t in tasks for k in ('gt', 'pred')]
    for i, title in enumerate(titles):
        draw.text((i * tile_w + 2, 1), title, fill='black')
    return np.array(img)


def main() -> None:
    p = argparse.ArgumentParser(description='PNGs of multi-task predictions beside inputs and ground truth')
    p.add_argument('config')
    p.add_argument('checkpoint', nargs='?', help='checkpoint file (full or delta); or give --adapter')
    p.add_argument('--adapter', metavar='DIR',
                   help='adapter folder (adapter.safetensors + adapter_config.json) instead of a checkpoint')
    p.add_argument('--out', default='work_dirs/vis')
    p.add_argument('--num', type=int, default=4, help='number of images')
    p.add_argument('--split', default='val', choices=['train', 'val', 'test'])
    p.add_argument('--scale', type=int, default=3, help='pixel magnification of the small demo images')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys, k=v')
    args = p.parse_args()
    if (args.checkpoint is None) == (args.adapter is None):
        p.error('give a CHECKPOINT or --adapter DIR (one of them)')
    for what, path in (('config file', args.config), ('checkpoint file', args.checkpoint)):
        if path is not None and not osp.isfile(path):
            raise FileNotFoundError(f'{what} {path} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    tasks = list(cfg.model.get('tasks', ['semseg', 'parts', 'sal', 'normals']))
    rows = predict_rows(cfg, args.checkpoint, args.num, args.split, args.adapter)
    os.makedirs(args.out, exist_ok=True)
    strips = []
    for row in rows:
        strip = compose(row, tasks, args.scale)
        Image.fromarray(strip).save(osp.join(args.out, f"{row['img_id']}.png"))
        strips.append(strip)
    tile_w = strips[0].shape[1] // (1 + 2 * len(tasks))
    grid = np.concatenate([header(strips[0].shape[1], tasks, tile_w)] + strips, axis=0)
    Image.fromarray(grid).save(osp.join(args.out, 'grid.png'))
    print(f'wrote {len(rows)} images and grid.png to {args.out}')


if __name__ == '__main__':
    main()
