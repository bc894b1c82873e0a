"""A small deterministic segmentation dataset the project generates itself (no downloads).

Layout (mmseg's usual one, so ``BaseSegDataset`` reads it)::

    root/img_dir/{train,val}/NNNN.png   RGB images, textured background + shapes
    root/ann_dir/{train,val}/NNNN.png   class ids: 0 background, 1 disc, 2 square, 3 triangle

Every image holds 1-3 shapes of random class, size, colour and position, drawn over a noisy
gradient, so the classes are told apart by shape rather than colour alone.
"""
import os
import os.path as osp
import shutil
import tempfile
from typing import List, Optional, Tuple

import numpy as np
from mmseg.datasets import BaseSegDataset
from PIL import Image

from ..registry import DATASETS

CLASSES = ('background', 'disc', 'square', 'triangle')
PALETTE = [[0, 0, 0], [220, 20, 60], [0, 128, 255], [255, 200, 0]]


def _draw_sample(rng: np.random.Generator, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, size=3)
    grad = rng.uniform(-60, 60, size=3)
    img = base[None, None] + grad[None, None] * (xx / w)[..., None]
    img = img + rng.normal(0, 12, size=(h, w, 3))
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, len(CLASSES)))
        r = rng.uniform(0.12, 0.25) * min(h, w)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        if cls == 1:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
        elif cls == 2:
            mask = (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
        else:  # upward triangle: below the apex, inside two slanted edges
            top = cy - r
            mask = (yy >= top) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - top) * 0.6)
        colour = rng.uniform(0, 255, size=3)
        img[mask] = colour + rng.normal(0, 8, size=(int(mask.sum()), 3))
        label[mask] = cls
    return np.clip(img, 0, 255).astype(np.uint8), label


def generate_synthetic_seg(root: str, num_train: int = 64, num_val: int = 16,
                           size: Tuple[int, int] = (64, 64), seed: int = 0) -> str:
    """Write the dataset to ``root`` (atomically: built in a temporary folder, then renamed).

    The content depends only on the arguments. If ``root`` already exists it is left as it is.
    Returns ``root``.
    """
    if osp.isdir(root):
        return root
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix='.' + osp.basename(root) + '.')
    try:
        rng = np.random.default_rng(seed)
        h, w = size
        for split, n in (('train', num_train), ('val', num_val)):
            os.makedirs(osp.join(tmp, 'img_dir', split))
            os.makedirs(osp.join(tmp, 'ann_dir', split))
            for i in range(n):
                img, label = _draw_sample(rng, h, w)
                Image.fromarray(img).save(osp.join(tmp, 'img_dir', split, f'{i:04d}.png'))
                Image.fromarray(label).save(osp.join(tmp, 'ann_dir', split, f'{i:04d}.png'))
        try:
            os.rename(tmp, root)
        except OSError:
            if not osp.isdir(root):  # another process won the race: its copy is identical
                raise
    finally:
        if osp.isdir(tmp):
            shutil.rmtree(tmp)
    return root


@DATASETS.register_module()
class SyntheticSegDataset(BaseSegDataset):
    """mmseg dataset over :func:`generate_synthetic_seg`'s layout.

    Args:
        generate: dict of :func:`generate_synthetic_seg` arguments (``num_train``, ``num_val``,
            ``size``, ``seed``) to create ``data_root`` first when it does not exist; None (default)
            requires the folder to exist, as any dataset does.
    """

    METAINFO = dict(classes=CLASSES, palette=PALETTE)

    def __init__(self, generate: Optional[dict] = None, **kwargs):
        data_root = kwargs.get('data_root')
        if generate is not None:
            if not data_root:
                raise ValueError('SyntheticSegDataset: `generate` needs `data_root`')
            generate_synthetic_seg(data_root, **generate)
        elif data_root and not osp.isdir(data_root):
            raise FileNotFoundError(f'SyntheticSegDataset: data_root {data_root} does not exist; '
                                    f'pass generate=dict() to create it')
        kwargs.setdefault('img_suffix', '.png')
        kwargs.setdefault('seg_map_suffix', '.png')
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        """mmseg's data list, refused when empty: mmengine would fail in its serialisation ("need
        at least one array to concatenate") or hang an infinite sampler, naming nothing."""
        data_list = super().load_data_list()
        if self.ann_file:  # mmseg turns a blank line of the split file into a nameless sample
            data_list = [d for d in data_list if osp.basename(d['img_path']) != self.img_suffix]
        if not data_list:
            source = (f'the split file (ann_file) {osp.abspath(self.ann_file)}' if self.ann_file
                      else f'the image folder {osp.abspath(self.data_prefix.get("img_path", ""))}')
            raise ValueError(f'SyntheticSegDataset: {source} lists no samples (it is empty); '
                             f'regenerate the data (generate=dict(...) on a new data_root) or '
                             f'point ann_file / data_prefix at a split with images')
        return data_list
