"""Test helper (not part of mmpeft): a VTAB-1k task folder as the release has it.

::

    root/<task>/images/NNNNNN.jpg
    root/<task>/train800val200.txt   # "images/NNNNNN.jpg <label>" per line
    root/<task>/test.txt

Images of varying heights (40 + i rows, 56 columns) with random content; labels ``i % num_classes``.
"""
import os
import os.path as osp

import numpy as np


def write_vtab_task(root: str, task: str, num_classes: int, n_train: int, n_test: int) -> None:
    """Write ``n_train`` training and ``n_test`` test images of ``task`` under ``root``."""
    import cv2
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(root, task, 'images'))
    lines = []
    for i in range(n_train + n_test):
        rel = f'images/{i:06d}.jpg'
        cv2.imwrite(osp.join(root, task, rel), rng.integers(0, 256, (40 + i, 56, 3), dtype=np.uint8))
        lines.append(f'{rel} {i % num_classes}')
    with open(osp.join(root, task, 'train800val200.txt'), 'w') as f:
        f.write('\n'.join(lines[:n_train]) + '\n')
    with open(osp.join(root, task, 'test.txt'), 'w') as f:
        f.write('\n'.join(lines[n_train:]) + '\n')
