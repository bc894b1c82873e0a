"""A small synthetic PASCAL-Context multi-task dataset in the release's exact on-disk layout.

Used by tests and demos (no real data needed). Every image is a little scene: a background made of
a wall plane and a floor plane, one or two objects (discs shaded as spheres, rectangles as tilted
planes) of random VOC classes, and, in two images out of three, a person built from PASCAL-Part
parts (head with hair/eyes/nose/mouth, neck, torso, upper/lower arms, hands, upper/lower legs,
feet).
The annotations agree with each other and with the image:

- ``semseg/pascal-context/<id>.png`` for every image (grey PNG, no ignore pixels) and
  ``semseg/VOC12/<id>.png`` for even-numbered images only (palette PNG with a 1-pixel 255 band at
  object boundaries, as VOC has), so both sides of the dataset's VOC12 -> pascal-context fallback
  are exercised.
- ``human_parts/<id>.mat`` for every image, in the PASCAL-Part ``anno.objects[].parts[]`` nesting
  (animals get a ``head`` part, which the person-parts reader must ignore), and
  ``ImageSets/Parts/<split>.txt`` listing each object's VOC class index (15 = person).
- ``sal_distill/<id>.png``: the person (else the largest object) at grey 230 with a 140 rim
  (both > 0.5 * 255: salient) and a 100 halo outside it (< 0.5 * 255: not salient).
- ``normals_distill/<id>.png``: analytic normals (spheres, cylinders for limbs, planes) in the
  x-right / y-down / z-towards-viewer frame, encoded ``v = round((n + 1) * 127.5)``; odd-numbered
  images have the top eighth of rows invalid, stored as (0, 0, 0).

Image ``i`` of a split has a person iff ``i % 3 != 2``. Output depends only on the arguments.
"""
import io
import json
import os
import os.path as osp
import shutil
import uuid
from typing import Dict, List, Optional, Tuple

import numpy as np
import scipy.io
from PIL import Image

from .pascal_context_mt import SEMSEG_CLASSES, voc_palette
from .pascal_part import PERSON_CLASS_IND

MARKER = 'synthetic_pascal_mt.json'
_ANIMALS = {'bird', 'cat', 'cow', 'dog', 'horse', 'sheep'}
_OBJECT_CLASSES = [i for i in range(1, len(SEMSEG_CLASSES)) if i != PERSON_CLASS_IND]
_LIGHT = np.array([-0.3, -0.5, 0.8]) / np.linalg.norm([-0.3, -0.5, 0.8])


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


class _Scene:
    """Paints instances back to front; later instances occlude earlier ones."""

    def __init__(self, h: int, w: int) -> None:
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float64)
        self.inst = np.zeros((h, w), np.int32)      # 0 = background
        self.normals = np.zeros((h, w, 3))
        self.classes: List[int] = []                # class of instance k + 1
        self.parts: Dict[int, List[Tuple[str, np.ndarray]]] = {}

    def add(self, cls: int, mask: np.ndarray, normals: np.ndarray) -> int:
        self.classes.append(cls)
        k = len(self.classes)
        self.inst[mask] = k
        self.normals[mask] = normals[mask] if normals.ndim == 3 else normals
        return k

    def disc(self, cx, cy, r) -> Tuple[np.ndarray, np.ndarray]:
        """Mask of a disc and the normals of the sphere it is the image of."""
        dx, dy = (self.xx - cx) / r, (self.yy - cy) / r
        mask = dx**2 + dy**2 <= 1
        dz = np.sqrt(np.clip(1 - dx**2 - dy**2, 0, 1))
        return mask, np.stack([dx, dy, dz], -1)

    def ellipse(self, cx, cy, rx, ry) -> np.ndarray:
        return ((self.xx - cx) / rx)**2 + ((self.yy - cy) / ry)**2 <= 1

    def rect(self, x0, y0, x1, y1) -> np.ndarray:
        return (self.xx >= x0) & (self.xx < x1) & (self.yy >= y0) & (self.yy < y1)

    def cylinder(self, x0, x1) -> np.ndarray:
        """Normals of a vertical cylinder spanning columns x0..x1."""
        nx = np.clip((self.xx - 0.5 * (x0 + x1)) / max(0.5 * (x1 - x0), 1e-6), -0.9, 0.9)
        return np.stack([nx, np.zeros_like(nx), np.sqrt(1 - nx**2)], -1)


def _add_person(scene: _Scene, rng: np.random.Generator, h: int, w: int) -> None:
    hgt = rng.uniform(0.6, 0.85) * h
    u = hgt / 8.0                                    # one "head height"
    cx = rng.uniform(0.3, 0.7) * w
    top = rng.uniform(0.02, 0.98 * h - hgt)
    parts: List[Tuple[str, np.ndarray, np.ndarray]] = []
    head_mask, head_n = scene.disc(cx, top + 0.55 * u, 0.5 * u)
    parts.append(('head', head_mask, head_n))
    parts.append(('hair', head_mask & (scene.yy < top + 0.3 * u), head_n))
    for name, dx, dy, rx, ry in (('reye', -0.18, 0.5, 0.08, 0.06), ('leye', 0.18, 0.5, 0.08, 0.06),
                                 ('nose', 0.0, 0.65, 0.06, 0.08), ('mouth', 0.0, 0.85, 0.15, 0.05)):
        parts.append((name, scene.ellipse(cx + dx * u, top + dy * u, rx * u, ry * u), head_n))

    def limb(name, x0, x1, y0, y1):
        x0, x1 = cx + x0 * u, cx + x1 * u
        parts.append((name, scene.rect(x0, top + y0 * u, x1, top + y1 * u), scene.cylinder(x0, x1)))

    limb('neck', -0.15, 0.15, 1.0, 1.4)
    limb('torso', -0.6, 0.6, 1.4, 4.0)
    # The person faces the camera: their left ('l...') is on the image's right.
    for side, s in (('r', -1), ('l', 1)):
        a0, a1 = sorted((s * 0.62, s * 0.95))
        limb(f'{side}uarm', a0, a1, 1.5, 2.8)
        limb(f'{side}larm', a0, a1, 2.8, 4.0)
        limb(f'{side}hand', a0, a1, 4.0, 4.4)
        g0, g1 = sorted((s * 0.05, s * 0.55))
        limb(f'{side}uleg', g0, g1, 4.0, 5.9)
        limb(f'{side}lleg', g0, g1, 5.9, 7.6)
        f0, f1 = sorted((s * 0.05, s * 0.75))
        limb(f'{side}foot', f0, f1, 7.6, 8.0)

    person = np.zeros_like(head_mask)
    normals = np.zeros(head_n.shape)
    for _, mask, n in parts:
        person |= mask
        normals[mask] = n[mask]
    k = scene.add(PERSON_CLASS_IND, person, normals)
    scene.parts[k] = [(name, mask) for name, mask, _ in parts if mask.any()]


def _draw_image(rng: np.random.Generator, h: int, w: int, index: int) -> dict:
    scene = _Scene(h, w)
    # Background: a slightly tilted wall over a floor whose normal points up (-y) and to the viewer.
    floor = scene.yy >= rng.uniform(0.6, 0.8) * h
    scene.normals[:] = _unit([rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), 1.0])
    scene.normals[floor] = _unit([0.0, -1.0, 0.4])
    for _ in range(1 + int(rng.random() < 0.5) + int(index % 3 == 2)):
        cls = int(rng.choice(_OBJECT_CLASSES))
        r = rng.uniform(0.12, 0.22) * min(h, w)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        if rng.random() < 0.5:
            mask, normals = scene.disc(cx, cy, r)
        else:
            mask = scene.rect(cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r)
            normals = _unit([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
        k = scene.add(cls, mask, normals)
        if SEMSEG_CLASSES[cls] in _ANIMALS:
            scene.parts[k] = [('head', mask & (scene.yy < cy - 0.3 * r))]
    if index % 3 != 2:
        _add_person(scene, rng, h, w)

    classes = np.array([0] + scene.classes, np.uint8)
    semseg = classes[scene.inst]
    # VOC marks object outlines as "void": pixels whose 4-neighbourhood spans two instances.
    inst = np.pad(scene.inst, 1, mode='edge')
    edge = ((inst[1:-1, 1:-1] != inst[:-2, 1:-1]) | (inst[1:-1, 1:-1] != inst[2:, 1:-1])
            | (inst[1:-1, 1:-1] != inst[1:-1, :-2]) | (inst[1:-1, 1:-1] != inst[1:-1, 2:]))
    semseg_voc = np.where(edge, 255, semseg).astype(np.uint8)

    ids = np.arange(1, len(scene.classes) + 1)
    if PERSON_CLASS_IND in scene.classes:
        salient_id = ids[np.array(scene.classes) == PERSON_CLASS_IND][0]
    else:
        salient_id = ids[np.argmax([(scene.inst == k).sum() for k in ids])]
    salient = scene.inst == salient_id
    grown = _dilate(salient)
    sal = np.where(salient, 230, np.where(grown, 100, 0)).astype(np.uint8)
    sal[salient & ~_erode(salient)] = 140

    valid = np.ones((h, w), bool)
    if index % 2 == 1:
        valid[:max(1, h // 8)] = False
    normals = _unit(scene.normals)
    encoded = np.clip(np.round((normals + 1.0) * 127.5), 0, 255).astype(np.uint8)
    encoded[~valid] = 0

    palette = np.array(voc_palette(len(SEMSEG_CLASSES)), np.float64)
    albedo = np.where(floor[..., None], 90.0, 150.0) * np.ones((h, w, 3))
    objects = scene.inst > 0
    albedo[objects] = 0.3 * 128 + 0.7 * palette[semseg[objects]]
    shade = 0.35 + 0.65 * np.clip(normals @ _LIGHT, 0, 1)
    img = albedo * shade[..., None] + rng.normal(0, 4, (h, w, 3))
    img[~valid] = (150, 190, 230)                    # "sky": where the release has no normals
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)

    return dict(img=img, semseg=semseg, semseg_voc=semseg_voc, sal=sal, normals=encoded,
                mat=_pascal_part_struct(scene), object_classes=list(scene.classes))


def _dilate(mask: np.ndarray) -> np.ndarray:
    m = np.pad(mask, 1)
    return m[1:-1, 1:-1] | m[:-2, 1:-1] | m[2:, 1:-1] | m[1:-1, :-2] | m[1:-1, 2:]


def _erode(mask: np.ndarray) -> np.ndarray:
    return ~_dilate(~mask)


def _pascal_part_struct(scene: _Scene) -> np.ndarray:
    """The scene as the ``anno`` struct of a PASCAL-Part ``.mat`` (mmpeft.datasets.pascal_part)."""
    obj_dtype = [('class', 'O'), ('class_ind', 'O'), ('mask', 'O'), ('parts', 'O')]
    objects = np.zeros((1, len(scene.classes)), dtype=obj_dtype)
    for j, cls in enumerate(scene.classes):
        parts = scene.parts.get(j + 1, [])
        objects[0, j]['class'] = SEMSEG_CLASSES[cls]
        objects[0, j]['class_ind'] = np.array([[cls]], np.uint8)
        objects[0, j]['mask'] = (scene.inst == j + 1).astype(np.uint8)
        if parts:
            arr = np.zeros((1, len(parts)), dtype=[('part_name', 'O'), ('mask', 'O')])
            for k, (name, mask) in enumerate(parts):
                arr[0, k]['part_name'] = name
                arr[0, k]['mask'] = (mask & (scene.inst == j + 1)).astype(np.uint8)
            objects[0, j]['parts'] = arr
        else:
            objects[0, j]['parts'] = np.zeros((0, 0))   # how MATLAB's [] loads
    anno = np.zeros((1, 1), dtype=[('imname', 'O'), ('objects', 'O')])
    anno[0, 0]['objects'] = objects
    return anno


def _save_mat(path: str, variables: dict) -> None:
    """``scipy.io.savemat`` (compressed v5), with a fixed header text instead of the creation
    time, so that equal arguments give byte-identical files."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, do_compression=True)
    data = bytearray(buf.getvalue())
    # The v5 header starts with 116 bytes of free text; the rest of the file does not depend on it.
    data[:116] = b'MATLAB 5.0 MAT-file, written by mmpeft synthetic_pascal_mt'.ljust(116)
    with open(path, 'wb') as f:
        f.write(bytes(data))


def _write_split(tmp: str, split: str, split_index: int, num: int, size: Tuple[int, int],
                 seed: int) -> None:
    h, w = size
    palette = [c for rgb in voc_palette(256) for c in rgb]
    ids, person_list = [], {}
    for i in range(num):
        img_id = f'{2008 + split_index}_{i:06d}'
        rng = np.random.default_rng([seed, split_index, i])
        d = _draw_image(rng, h, w, i)
        Image.fromarray(d['img']).save(osp.join(tmp, 'JPEGImages', img_id + '.jpg'), quality=95)
        Image.fromarray(d['semseg']).save(osp.join(tmp, 'semseg/pascal-context', img_id + '.png'))
        if i % 2 == 0:
            voc = Image.fromarray(d['semseg_voc'])
            voc.putpalette(palette)                  # VOC label PNGs are palette images
            voc.save(osp.join(tmp, 'semseg/VOC12', img_id + '.png'))
        Image.fromarray(d['sal']).save(osp.join(tmp, 'sal_distill', img_id + '.png'))
        Image.fromarray(d['normals']).save(osp.join(tmp, 'normals_distill', img_id + '.png'))
        d['mat'][0, 0]['imname'] = img_id
        _save_mat(osp.join(tmp, 'human_parts', img_id + '.mat'), {'anno': d['mat']})
        ids.append(img_id)
        person_list[img_id] = d['object_classes']
    with open(osp.join(tmp, 'ImageSets/Context', split + '.txt'), 'w') as f:
        f.write('\n'.join(ids) + '\n')
    with open(osp.join(tmp, 'ImageSets/Parts', split + '.txt'), 'w') as f:
        json.dump(person_list, f)


def _read_marker(root: str) -> Optional[dict]:
    path = osp.join(root, MARKER)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def generate_synthetic_pascal_mt(root: str, num_train: int = 24, num_val: int = 16,
                                 size: Tuple[int, int] = (128, 128), seed: int = 0,
                                 overwrite: bool = False) -> str:
    """Write a synthetic ``PASCAL_MT`` folder at ``root`` (see the module docstring).

    The folder is built under a temporary name next to ``root`` and renamed into place, so several
    processes (e.g. distributed ranks) may call this at once: one rename wins, the others find the
    finished folder. A folder written before with the same arguments is reused as is.

    Args:
        root: the dataset folder to create (what the dataset's ``data_root`` will be).
        num_train, num_val: number of images of each split (ids ``2008_00000i`` / ``2009_00000i``).
        size: ``(H, W)`` of every image.
        seed: random seed; the output is a function of all arguments only.
        overwrite: replace an existing synthetic folder written with other arguments (never a
            folder this function did not write). Do not use it from several processes at once.

    Returns:
        The absolute path of ``root``.

    Raises:
        FileExistsError: ``root`` exists and was not written by this function.
        ValueError: ``root`` holds a synthetic dataset with other arguments and not ``overwrite``.
    """
    root = osp.abspath(root)
    params = dict(num_train=int(num_train), num_val=int(num_val), size=[int(s) for s in size],
                  seed=int(seed))

    def reuse_existing() -> bool:
        if not osp.exists(root):
            return False
        marker = _read_marker(root)
        if marker is None:
            raise FileExistsError(f'{root} exists and is not a synthetic PASCAL_MT folder '
                                  f'(no {MARKER}); refusing to touch it')
        if marker == params:
            return True
        if overwrite:
            return False
        raise ValueError(f'{root} holds a synthetic dataset made with {marker}, not {params}; '
                         f'pass overwrite=True to replace it')

    if reuse_existing():
        return root
    parent = osp.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = osp.join(parent, f'.{osp.basename(root)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}')
    try:
        for sub in ('JPEGImages', 'ImageSets/Context', 'ImageSets/Parts', 'semseg/VOC12',
                    'semseg/pascal-context', 'human_parts', 'sal_distill', 'normals_distill'):
            os.makedirs(osp.join(tmp, sub))
        for split_index, (split, num) in enumerate((('train', num_train), ('val', num_val))):
            _write_split(tmp, split, split_index, num, tuple(size), seed)
        with open(osp.join(tmp, MARKER), 'w') as f:
            json.dump(params, f)   # written last: its presence means the folder is complete

        if osp.exists(root):       # overwrite of a synthetic folder with other arguments
            trash = tmp + '.old'
            os.rename(root, trash)
            os.rename(tmp, root)
            shutil.rmtree(trash, ignore_errors=True)
            return root
        try:
            os.rename(tmp, root)
        except OSError:
            # Another process renamed its copy first; use theirs if it matches.
            if not reuse_existing():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
