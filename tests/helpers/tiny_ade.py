"""Test helper (not part of mmpeft): a tiny dataset in the ADE20K release layout.

::

    root/images/{training,validation}/ADE_{train,val}_NNNNNNNN.jpg
    root/annotations/{training,validation}/ADE_{train,val}_NNNNNNNN.png

as mmseg's ``ADE20KDataset`` reads it (``reduce_zero_label=True``): in the PNGs 0 is "other"
(ignored after the reduction) and ``c`` in 1..150 is ADE class ``c - 1``. The images hold a few
filled rectangles / ellipses of classes ``1..num_classes`` on a noisy background (value 0).
The content depends only on the arguments.
"""
import os
import os.path as osp
from typing import Tuple

import cv2
import numpy as np


def generate_tiny_ade(root: str, num_train: int = 4, num_val: int = 2,
                      size: Tuple[int, int] = (64, 64), num_classes: int = 3, seed: int = 0) -> str:
    """Write the dataset under ``root`` (created if needed) and return ``root``."""
    if not 1 <= num_classes <= 150:
        raise ValueError(f'num_classes={num_classes}: ADE20K has 150')
    rng = np.random.default_rng(seed)
    h, w = size
    for split, tag, n in (('training', 'train', num_train), ('validation', 'val', num_val)):
        img_dir = osp.join(root, 'images', split)
        ann_dir = osp.join(root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(n):
            img = rng.uniform(60, 190, size=3)[None, None] + rng.normal(0, 8, size=(h, w, 3))
            label = np.zeros((h, w), np.uint8)
            for _ in range(int(rng.integers(2, 4))):
                cls = int(rng.integers(1, num_classes + 1))
                r = rng.uniform(0.15, 0.3) * min(h, w)
                cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
                mask = np.zeros((h, w), np.uint8)
                if cls % 2:
                    cv2.rectangle(mask, (int(cx - r), int(cy - r)), (int(cx + r), int(cy + r)), 1, -1)
                else:
                    cv2.ellipse(mask, (int(cx), int(cy)), (int(r), int(0.6 * r)), 0, 0, 360, 1, -1)
                img[mask.astype(bool)] = rng.uniform(0, 255, size=3)
                label[mask.astype(bool)] = cls
            name = f'ADE_{tag}_{i + 1:08d}'
            cv2.imwrite(osp.join(img_dir, name + '.jpg'), np.clip(img, 0, 255).astype(np.uint8),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(osp.join(ann_dir, name + '.png'), label)
    return root
