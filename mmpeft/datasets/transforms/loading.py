"""Loading the PASCAL-Context multi-task annotations into the pipeline's ``results`` dict."""
import io
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine import fileio
from PIL import Image

from mmpeft.registry import TRANSFORMS
from mmpeft.structures.multitask_data_sample import TASKS

from ..pascal_context_mt import SEMSEG_CLASSES
from ..pascal_part import read_human_parts

#: Label value of pixels that no loss or metric uses.
IGNORE_INDEX = 255

#: Decoded normals shorter than this are treated as invalid: a valid quantised unit vector has a
#: length within ~1% of 1, so anything far shorter is a corrupt or "no normal" pixel.
MIN_VALID_NORMAL_NORM = 0.5


def decode_normals(rgb: np.ndarray) -> np.ndarray:
    """Normals from their PNG encoding ``v = (n + 1) * 255 / 2``.

    Args:
        rgb: ``(H, W, 3)`` uint8, channels (x, y, z) stored as (R, G, B).

    Returns:
        ``(H, W, 3)`` float32 unit vectors ``n = 2 v / 255 - 1`` renormalised to length 1; pixels
        stored as ``(0, 0, 0)`` (the release's "no normal here") and vectors shorter than
        :data:`MIN_VALID_NORMAL_NORM` become ``(0, 0, 0)``, i.e. invalid.
    """
    rgb = np.asarray(rgb)
    n = rgb.astype(np.float32) * (2.0 / 255.0) - 1.0
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    valid = (rgb.any(axis=-1, keepdims=True)) & (norm >= MIN_VALID_NORMAL_NORM)
    return np.where(valid, n / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def binarize_saliency(gray: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 grey levels -> uint8 {0, 1}: salient where ``v / 255 > 0.5``."""
    return (np.asarray(gray).astype(np.float32) / 255.0 > 0.5).astype(np.uint8)


@TRANSFORMS.register_module()
class LoadMultiTaskAnnotations(BaseTransform):
    """Load the ground truth of the tasks of one PASCAL-Context multi-task sample.

    Place it after ``LoadImageFromFile`` (it needs ``ori_shape``). In a test pipeline put it after
    the resize, as mmseg does, so the ground truth stays at the original size the metric compares
    predictions at.

    Required keys (from :class:`~mmpeft.datasets.PascalContextMultiTaskDataset`): ``ori_shape``,
    ``tasks``, and per task ``seg_map_path`` (semseg), ``parts_path`` + ``has_person`` (parts),
    ``sal_path`` (sal), ``normals_path`` (normals).

    Added keys (only for the loaded tasks):

    - ``gt_semseg``: ``(H, W)`` uint8, 0..20, 255 = ignore (the PNG's palette indices or grey
      values).
    - ``gt_parts``: ``(H, W)`` uint8, 0..6; all 255 when ``has_person`` is false.
    - ``gt_sal``: ``(H, W)`` uint8 {0, 1}, the grey PNG binarised at 0.5.
    - ``gt_normals``: ``(H, W, 3)`` float32 unit vectors (x right, y down, z out of the image), see
      :func:`decode_normals`; ``(0, 0, 0)`` = invalid.

    Args:
        tasks: tasks to load; ``None`` loads ``results['tasks']``.
        backend_args: mmengine file backend arguments (local disk by default).
        num_semseg_classes: semantic label values must be ``0 .. num_semseg_classes - 1`` or
            :data:`IGNORE_INDEX`; anything else (a map of another label set, a 16-bit PNG) would
            fail deep inside the loss or silently train on garbage.

    Raises:
        FileNotFoundError: naming the task and the missing file.
        ValueError: naming the file, when an annotation's size differs from the image's, when a
            label file is corrupt or truncated, or when semantic labels are out of range (the
            values, the number of classes and the ignore index named).
    """

    def __init__(self, tasks: Optional[Sequence[str]] = None,
                 backend_args: Optional[dict] = None,
                 num_semseg_classes: int = len(SEMSEG_CLASSES)) -> None:
        if tasks is not None:
            unknown = set(tasks) - set(TASKS)
            if unknown:
                raise ValueError(f'unknown tasks {sorted(unknown)}; known: {TASKS}')
        self.tasks = None if tasks is None else list(tasks)
        self.num_semseg_classes = int(num_semseg_classes)
        self.backend_args = backend_args

    def _get(self, path: str, task: str) -> bytes:
        try:
            return fileio.get(path, backend_args=self.backend_args)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f'PASCAL-Context multi-task: {task} annotation file not found: {path}') from e

    def _read_png(self, path: str, task: str, mode: Optional[str] = None) -> np.ndarray:
        data = self._get(path, task)
        try:
            img = Image.open(io.BytesIO(data))
            # Label PNGs are palette ('P') or grey ('L'); np.array of a 'P' image gives the indices.
            if mode is not None and img.mode != mode:
                img = img.convert(mode)
            return np.array(img)
        except Exception as e:  # PIL raises OSError, SyntaxError, zlib.error ... without the path
            raise ValueError(f'{path}: the {task} annotation is corrupt or truncated ({len(data)} '
                             f'bytes; the image decoder says: {e}); restore this file from the '
                             f'dataset release') from e

    @staticmethod
    def _check_range(label: np.ndarray, num_classes: int, path: str, task: str) -> None:
        bad = ((label < 0) | (label >= num_classes)) & (label != IGNORE_INDEX)
        if bad.any():
            values = np.unique(label[bad])
            raise ValueError(
                f'{path}: {task} label values {values[:10].tolist()} ({int(bad.sum())} pixels) are '
                f'outside the {num_classes} classes 0..{num_classes - 1} and are not the ignore '
                f'index {IGNORE_INDEX}; fix the label file, or set num_{task}_classes of '
                f'LoadMultiTaskAnnotations (and the model) if the dataset has more classes')

    @staticmethod
    def _check_shape(arr: np.ndarray, shape: Tuple[int, int], path: str) -> np.ndarray:
        if arr.shape[:2] != tuple(shape):
            raise ValueError(f'{path}: annotation size {arr.shape[:2]} differs from the image '
                             f'size {tuple(shape)}')
        return arr

    def transform(self, results: dict) -> dict:
        """Add ``gt_<task>`` arrays to ``results`` (see the class docstring)."""
        tasks = self.tasks if self.tasks is not None else results['tasks']
        shape = tuple(results['ori_shape'][:2])
        loaders: dict[str, Callable[[dict, Tuple[int, int]], np.ndarray]] = dict(
            semseg=self._load_semseg, parts=self._load_parts, sal=self._load_sal,
            normals=self._load_normals)
        for task in tasks:
            results[f'gt_{task}'] = loaders[task](results, shape)
        return results

    def _load_semseg(self, results: dict, shape: Tuple[int, int]) -> np.ndarray:
        path = results['seg_map_path']
        label = self._read_png(path, 'semseg')
        if label.ndim != 2:
            # Colour-coded RGB labels would need the palette to decode; the release has none.
            raise ValueError(
                f'{path}: expected a palette or grey label PNG, got shape {label.shape}')
        self._check_range(label, self.num_semseg_classes, path, 'semseg')
        return self._check_shape(label.astype(np.uint8), shape, path)

    def _load_parts(self, results: dict, shape: Tuple[int, int]) -> np.ndarray:
        if not results['has_person']:
            # No person: nothing to learn or score for this task (not "all background").
            return np.full(shape, IGNORE_INDEX, dtype=np.uint8)
        path = results['parts_path']
        return read_human_parts(self._get(path, 'parts'), shape, name=path)

    def _load_sal(self, results: dict, shape: Tuple[int, int]) -> np.ndarray:
        path = results['sal_path']
        return self._check_shape(binarize_saliency(self._read_png(path, 'sal', mode='L')),
                                 shape, path)

    def _load_normals(self, results: dict, shape: Tuple[int, int]) -> np.ndarray:
        path = results['normals_path']
        return self._check_shape(decode_normals(self._read_png(path, 'normals', mode='RGB')),
                                 shape, path)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(tasks={self.tasks})'
