"""Geometric augmentation of an image together with all its dense multi-task annotations.

Keys handled (whichever are present in ``results``):

- ``img``: ``(H, W, C)`` image, bilinear interpolation, padded with ``img_pad_val``.
- ``gt_semseg``, ``gt_parts``, ``gt_sal``: ``(H, W)`` label maps, nearest interpolation, padded
  with 255 (ignore).
- ``gt_normals``: ``(H, W, 3)`` float32 unit normals, ``(0, 0, 0)`` = invalid, padded as invalid.
  Bilinear interpolation, then renormalised; a pixel stays valid only where the nearest source pixel
  was valid, so invalid regions do not bleed into valid ones (and vice versa).

Normal-vector convention (the same as :mod:`mmpeft.structures.multitask_data_sample`): image axes,
``x`` to the right (increasing column), ``y`` *down* (increasing row), ``z`` out of the image plane.
A horizontal flip therefore negates ``nx`` (a vertical flip negates ``ny``), and rotating the image
rotates ``(nx, ny)`` by the same angle in the same pixel frame, ``z`` unchanged.

Rotation angles follow mmcv/mmseg (``mmcv.imrotate``, ``RandomRotate``): a positive angle turns the
image *clockwise* as displayed. In the y-down pixel frame, a clockwise turn by ``theta`` about the
centre ``c`` moves the pixel at ``p`` to ``c + R(theta) (p - c)`` and maps a normal ``(nx, ny)`` to
``R(theta) (nx, ny)``, with ``R(theta) = [[cos, -sin], [sin, cos]]``: e.g. at 90 degrees a
point right of the centre goes below it and a normal pointing right points down.

Photometric augmentation touches only ``img``; use mmseg's ``PhotoMetricDistortion`` for it.
"""
from typing import Optional, Sequence, Tuple, Union

import cv2
import mmcv
import numpy as np
from mmcv.transforms import BaseTransform

from mmpeft.registry import TRANSFORMS

from .loading import IGNORE_INDEX

LABEL_KEYS = ('gt_semseg', 'gt_parts', 'gt_sal')
NORMALS_KEY = 'gt_normals'


def _current_hw(results: dict) -> Tuple[int, int]:
    """(H, W) shared by the image and every annotation present (checked)."""
    shapes = {k: results[k].shape[:2] for k in ('img',) + LABEL_KEYS + (NORMALS_KEY,)
              if k in results}
    if not shapes:
        raise KeyError('no image or annotation in results to transform')
    if len(set(shapes.values())) != 1:
        raise ValueError(f'image and annotations differ in size: {shapes}')
    return tuple(next(iter(shapes.values())))


def _fix_normals(warped: np.ndarray, valid: np.ndarray,
                 rotation: Optional[np.ndarray] = None) -> np.ndarray:
    """Rotate interpolated normals in-plane, renormalise, and zero the invalid pixels.

    Args:
        warped: ``(H, W, 3)`` interpolated normals.
        valid: ``(H, W)`` bool, nearest-interpolated validity.
        rotation: ``(2, 2)`` matrix applied to ``(nx, ny)``, or None.
    """
    n = warped.astype(np.float32, copy=True)
    if rotation is not None:
        n[..., :2] = n[..., :2] @ rotation.T.astype(np.float32)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    # Bilinear mixing of very different valid normals can cancel out: such pixels have no direction.
    keep = valid[..., None] & (norm > 1e-6)
    return np.where(keep, n / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def _normals_valid(normals: np.ndarray) -> np.ndarray:
    return np.any(normals != 0, axis=-1)


def warp_affine_results(results: dict, matrix: np.ndarray, out_hw: Tuple[int, int],
                        normal_rotation: Optional[np.ndarray], img_pad_val: float = 0) -> dict:
    """Apply one 2x3 affine pixel map to the image and every annotation in ``results``.

    Args:
        results: pipeline dict (keys in the module docstring).
        matrix: ``(2, 3)`` map from source to destination pixel coordinates (cv2 convention).
        out_hw: output ``(H, W)``.
        normal_rotation: ``(2, 2)`` rotation applied to ``(nx, ny)``; None for no rotation.
        img_pad_val: value of image pixels mapped from outside the source.
    """
    h, w = out_hw

    def warp(arr: np.ndarray, interp: int, border: float) -> np.ndarray:
        return cv2.warpAffine(arr, matrix, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(border, ) * 4)  # a bare number pads channel 0 only

    if 'img' in results:
        results['img'] = warp(results['img'], cv2.INTER_LINEAR, img_pad_val)
        results['img_shape'] = (h, w)
    for key in LABEL_KEYS:
        if key in results:
            results[key] = warp(results[key], cv2.INTER_NEAREST, IGNORE_INDEX)
    if NORMALS_KEY in results:
        normals = results[NORMALS_KEY]
        valid = warp(_normals_valid(normals).astype(np.uint8), cv2.INTER_NEAREST, 0) > 0
        results[NORMALS_KEY] = _fix_normals(warp(normals, cv2.INTER_LINEAR, 0), valid,
                                            normal_rotation)
    return results


def _centre_affine(hw: Tuple[int, int], angle: float, scale: float) -> np.ndarray:
    """2x3 map turning by ``angle`` degrees clockwise (as displayed) and zooming by ``scale``
    about the image centre."""
    h, w = hw
    # cv2 counts angles counter-clockwise; mmcv.imrotate negates them the same way.
    return cv2.getRotationMatrix2D(((w - 1) * 0.5, (h - 1) * 0.5), -angle, scale)


def rotation_matrix(angle: float) -> np.ndarray:
    """``R(theta)`` acting on ``(x, y)`` in the y-down pixel frame for a clockwise turn of
    ``angle`` degrees."""
    t = np.deg2rad(angle)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


@TRANSFORMS.register_module()
class MultiTaskRandomFlip(BaseTransform):
    """Flip the image and all annotations with probability ``prob``; normals flip with them.

    Args:
        prob: flip probability.
        direction: ``'horizontal'`` (negates ``nx``) or ``'vertical'`` (negates ``ny``).

    Added keys: ``flip`` (bool), ``flip_direction`` (``direction`` or None), as mmcv's RandomFlip.
    """

    def __init__(self, prob: float = 0.5, direction: str = 'horizontal') -> None:
        if direction not in ('horizontal', 'vertical'):
            raise ValueError(f"direction must be 'horizontal' or 'vertical', got {direction!r}")
        if not 0 <= prob <= 1:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        self.prob = prob
        self.direction = direction

    def transform(self, results: dict) -> dict:
        """Flip ``results`` in place (see the class docstring)."""
        flip = bool(np.random.rand() < self.prob)
        results['flip'] = flip
        results['flip_direction'] = self.direction if flip else None
        if not flip:
            return results
        axis = 1 if self.direction == 'horizontal' else 0
        for key in ('img',) + LABEL_KEYS + (NORMALS_KEY,):
            if key in results:
                results[key] = np.ascontiguousarray(np.flip(results[key], axis=axis))
        if NORMALS_KEY in results:
            # The flipped axis' component changes sign: a normal facing right now faces left.
            component = 0 if self.direction == 'horizontal' else 1
            results[NORMALS_KEY][..., component] *= -1
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(prob={self.prob}, direction={self.direction!r})'


@TRANSFORMS.register_module()
class MultiTaskRandomScale(BaseTransform):
    """Zoom about the image centre by a random factor, keeping the canvas size.

    ``s > 1`` enlarges the content (the border is cropped away); ``s < 1`` shrinks it and pads the
    border (image ``img_pad_val``, labels 255, normals invalid). Keeping the canvas is what makes
    the zoom survive a following fixed-size resize. Normal directions are unchanged by a zoom.

    Args:
        scale_range: ``(low, high)`` of the uniformly drawn factor.
        prob: probability of zooming at all.
        img_pad_val: image padding value.

    Added keys: ``zoom_factor`` (float, 1.0 when not applied).
    """

    def __init__(self, scale_range: Sequence[float] = (0.75, 1.25), prob: float = 1.0,
                 img_pad_val: float = 0) -> None:
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f'scale_range must satisfy 0 < low <= high, got {scale_range}')
        self.scale_range = (float(low), float(high))
        self.prob = prob
        self.img_pad_val = img_pad_val

    def transform(self, results: dict) -> dict:
        """Zoom ``results`` in place (see the class docstring)."""
        scale = 1.0
        if np.random.rand() < self.prob:
            scale = float(np.random.uniform(*self.scale_range))
        results['zoom_factor'] = scale
        if scale == 1.0:
            return results
        hw = _current_hw(results)
        return warp_affine_results(results, _centre_affine(hw, 0.0, scale), hw, None,
                                   self.img_pad_val)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(scale_range={self.scale_range}, prob={self.prob})'


@TRANSFORMS.register_module()
class MultiTaskRandomRotate(BaseTransform):
    """Rotate about the image centre by a random angle, keeping the canvas size.

    The in-plane components of every normal turn with the image (module docstring); the corners
    uncovered by the turn are padded (image ``img_pad_val``, labels 255, normals invalid).

    Args:
        degree: ``d`` for the range ``[-d, d]``, or an explicit ``(low, high)`` in degrees;
            positive angles turn clockwise as displayed (mmcv convention).
        prob: probability of rotating at all.
        img_pad_val: image padding value.

    Added keys: ``rotate_angle`` (degrees, 0.0 when not applied).
    """

    def __init__(self, degree: Union[float, Sequence[float]] = 20.0, prob: float = 1.0,
                 img_pad_val: float = 0) -> None:
        if isinstance(degree, (int, float)):
            if degree < 0:
                raise ValueError(f'degree must be >= 0, got {degree}')
            degree = (-float(degree), float(degree))
        low, high = degree
        if low > high:
            raise ValueError(f'degree range must satisfy low <= high, got {degree}')
        self.degree = (float(low), float(high))
        self.prob = prob
        self.img_pad_val = img_pad_val

    def transform(self, results: dict) -> dict:
        """Rotate ``results`` in place (see the class docstring)."""
        angle = 0.0
        if np.random.rand() < self.prob:
            angle = float(np.random.uniform(*self.degree))
        results['rotate_angle'] = angle
        if angle == 0.0:
            return results
        hw = _current_hw(results)
        return warp_affine_results(results, _centre_affine(hw, angle, 1.0), hw,
                                   rotation_matrix(angle), self.img_pad_val)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(degree={self.degree}, prob={self.prob})'


@TRANSFORMS.register_module()
class MultiTaskResize(BaseTransform):
    """Resize the image and all annotations to ``scale``.

    Args:
        scale: target ``(w, h)`` (mmcv order), default the benchmark's 512x512.
        keep_ratio: if True, the largest size fitting ``scale`` with the aspect ratio kept
            (``mmcv.rescale_size``), else exactly ``scale``.

    Updated keys: ``img_shape`` ``(h, w)``, ``scale_factor`` ``(w_scale, h_scale)`` relative to the
    input of this transform, ``keep_ratio``.
    """

    def __init__(self, scale: Tuple[int, int] = (512, 512), keep_ratio: bool = False) -> None:
        self.scale = tuple(int(s) for s in scale)
        if len(self.scale) != 2 or min(self.scale) <= 0:
            raise ValueError(f'scale must be a positive (w, h), got {scale}')
        self.keep_ratio = keep_ratio

    def transform(self, results: dict) -> dict:
        """Resize ``results`` in place (see the class docstring)."""
        h, w = _current_hw(results)
        if self.keep_ratio:
            new_w, new_h = mmcv.rescale_size((w, h), self.scale)
        else:
            new_w, new_h = self.scale
        size = (new_w, new_h)
        if 'img' in results:
            results['img'] = cv2.resize(results['img'], size, interpolation=cv2.INTER_LINEAR)
        for key in LABEL_KEYS:
            if key in results:
                results[key] = cv2.resize(results[key], size, interpolation=cv2.INTER_NEAREST)
        if NORMALS_KEY in results:
            normals = results[NORMALS_KEY]
            valid = cv2.resize(_normals_valid(normals).astype(np.uint8), size,
                               interpolation=cv2.INTER_NEAREST) > 0
            results[NORMALS_KEY] = _fix_normals(
                cv2.resize(normals, size, interpolation=cv2.INTER_LINEAR), valid)
        results['img_shape'] = (new_h, new_w)
        results['scale_factor'] = (new_w / w, new_h / h)
        results['keep_ratio'] = self.keep_ratio
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(scale={self.scale}, keep_ratio={self.keep_ratio})'
