"""Test helper (not part of mmpeft): a tiny COCO-format instance-segmentation dataset.

Layout (what mmdet's ``CocoDataset`` and ``CocoMetric`` read)::

    root/train/NNNN.jpg  root/val/NNNN.jpg
    root/annotations/instances_train.json  root/annotations/instances_val.json

Every image is a noisy background with 1-3 filled shapes, one instance each: ``box`` (rectangle,
polygon mask), ``ellipse`` (compressed-RLE mask, as COCO stores crowd-free RLE) and ``triangle``
(polygon mask). Image, mask, bbox and area come from the same rasterised mask, so they agree.
The content depends only on the arguments.
"""
import json
import os
import os.path as osp
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_utils

CATEGORIES = ('box', 'ellipse', 'triangle')


def _shape(rng: np.random.Generator, cat: int, h: int, w: int) -> Tuple[np.ndarray, List[List[float]]]:
    """A ``(h, w)`` uint8 mask of one shape of category index ``cat`` and its polygon (x, y pairs)."""
    r = rng.uniform(0.15, 0.3) * min(h, w)
    cy, cx = rng.uniform(r + 1, h - r - 1), rng.uniform(r + 1, w - r - 1)
    if cat == 0:
        ry = r * rng.uniform(0.6, 1.0)
        pts = np.array([[cx - r, cy - ry], [cx + r, cy - ry], [cx + r, cy + ry], [cx - r, cy + ry]])
    elif cat == 1:
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = np.stack([cx + r * np.cos(t), cy + 0.7 * r * np.sin(t)], axis=1)
    else:
        pts = np.array([[cx, cy - r], [cx + r, cy + r], [cx - r, cy + r]])
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask, [np.round(pts, 1).reshape(-1).tolist()]


def _annotation(mask: np.ndarray, polygon, cat: int, ann_id: int, img_id: int) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
    if cat == 1:  # RLE, counts as a string, as COCO writes it
        segmentation = dict(size=[int(s) for s in rle['size']], counts=rle['counts'].decode('ascii'))
    else:
        segmentation = polygon
    return dict(id=ann_id, image_id=img_id, category_id=cat + 1, bbox=[x, y, bw, bh],
                area=float(mask_utils.area(rle)), iscrowd=0, segmentation=segmentation)


def generate_tiny_coco(root: str, num_train: int = 4, num_val: int = 2,
                       size: Tuple[int, int] = (96, 96), seed: int = 0,
                       categories: Sequence[str] = CATEGORIES) -> str:
    """Write the dataset under ``root`` (created if needed) and return ``root``."""
    rng = np.random.default_rng(seed)
    h, w = size
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    ann_id = 1
    for split, n in (('train', num_train), ('val', num_val)):
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, anns = [], []
        for i in range(n):
            img_id = i + 1
            yy, xx = np.mgrid[0:h, 0:w]
            img = rng.uniform(60, 190, size=3)[None, None] + 30 * np.sin(xx / 9.0)[..., None]
            img = img + rng.normal(0, 6, size=(h, w, 3))
            k = int(rng.integers(1, 4))
            for cat in rng.permutation(len(categories))[:k]:
                mask, polygon = _shape(rng, int(cat), h, w)
                img[mask.astype(bool)] = rng.uniform(0, 255, size=3)
                anns.append(_annotation(mask, polygon, int(cat), ann_id, img_id))
                ann_id += 1
            name = f'{i:04d}.jpg'
            cv2.imwrite(osp.join(root, split, name), np.clip(img, 0, 255).astype(np.uint8),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append(dict(id=img_id, file_name=name, height=h, width=w))
        coco = dict(images=images, annotations=anns,
                    categories=[dict(id=c + 1, name=name, supercategory='shape')
                                for c, name in enumerate(categories)])
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f)
    return root
