"""The data sample exchanged between the multi-task data pipeline, the model and the metric.

Contract (shared by :class:`~mmpeft.datasets.transforms.PackMultiTaskInputs`, the multi-task model
and its data preprocessor, and :class:`~mmpeft.evaluation.MultiTaskDenseMetric`):

* The pipeline's packing transform returns ``dict(inputs=img, data_samples=sample)`` where ``img``
  is a ``(3, H, W)`` uint8 tensor in the channel order the image was loaded with (BGR for mmcv's
  ``LoadImageFromFile`` default, so the preprocessor sets ``bgr_to_rgb=True`` as mmseg's
  ``SegDataPreProcessor`` does) and ``sample`` is a :class:`MultiTaskDataSample`.
* Every field below is an :class:`mmengine.structures.PixelData` whose ``.data`` is a tensor; each
  is optional and only the tasks in ``metainfo['tasks']`` carry ground truth.

  =============== ========= ======= ===========================================================
  field           shape     dtype   meaning
  =============== ========= ======= ===========================================================
  ``gt_semseg``   (1, H, W) int64   21 classes (0 = background), 255 = ignore
  ``gt_parts``    (1, H, W) int64   7 classes (0 = background), 255 = ignore (all 255 when the
                                    image has no person)
  ``gt_sal``      (1, H, W) int64   0 / 1, 255 = ignore (only padding from geometric augmentation)
  ``gt_normals``  (3, H, W) float32 unit vectors ``(nx, ny, nz)``, ``(0, 0, 0)`` = invalid pixel
  ``pred_semseg`` (1, H, W) int64   class ids
  ``pred_parts``  (1, H, W) int64   class ids
  ``pred_sal``    (1, H, W) float   probability of "salient" in [0, 1]
  ``pred_normals``(3, H, W) float   normal vectors; need not be unit length (the metric normalises)
  =============== ========= ======= ===========================================================

  Normal vectors use image axes: ``x`` points right (increasing column), ``y`` points *down*
  (increasing row), ``z`` is out of the image plane (not changed by in-plane augmentation).

* Predictions are set by the model at the *original* image size ``metainfo['ori_shape']``; the test
  pipeline loads annotations after resizing, so ``gt_*`` are at that size too (as in mmseg).
* ``metainfo`` carries the mmseg keys ``img_path``, ``ori_shape``, ``img_shape``, ``pad_shape``,
  ``scale_factor``, ``flip``, ``flip_direction`` (those present), plus ``tasks`` (list of task names
  among ``'semseg'``, ``'parts'``, ``'sal'``, ``'normals'``) and ``img_id``.
"""
from mmengine.structures import BaseDataElement, PixelData

#: Task names in their canonical order.
TASKS = ('semseg', 'parts', 'sal', 'normals')


def _pixel_field(name: str, doc: str) -> property:
    """A typed property stored under ``'_' + name`` (the layout mmengine's ``keys()`` expects)."""
    private = '_' + name

    def getter(self) -> PixelData:
        return getattr(self, private)

    def setter(self, value: PixelData) -> None:
        self.set_field(value, private, dtype=PixelData)

    def deleter(self) -> None:
        delattr(self, private)

    return property(getter, setter, deleter, doc=doc)


class MultiTaskDataSample(BaseDataElement):
    """Ground truth and predictions of the dense multi-task benchmark for one image.

    See the module docstring for the shape/dtype contract of each field.

    Examples:
        >>> import torch
        >>> sample = MultiTaskDataSample(metainfo=dict(tasks=['sal']))
        >>> sample.gt_sal = PixelData(data=torch.zeros(1, 4, 5, dtype=torch.long))
        >>> 'gt_sal' in sample, sample.gt_sal.shape
        (True, (4, 5))
    """

    gt_semseg = _pixel_field('gt_semseg', 'Semantic labels (1, H, W) int64, 255 = ignore.')
    gt_parts = _pixel_field('gt_parts', 'Human-part labels (1, H, W) int64, 255 = ignore.')
    gt_sal = _pixel_field('gt_sal', 'Saliency labels (1, H, W) int64 in {0, 1, 255}.')
    gt_normals = _pixel_field('gt_normals', 'Unit normals (3, H, W) float32, zero = invalid.')
    pred_semseg = _pixel_field('pred_semseg', 'Predicted class ids (1, H, W) int64.')
    pred_parts = _pixel_field('pred_parts', 'Predicted part ids (1, H, W) int64.')
    pred_sal = _pixel_field('pred_sal', 'Predicted saliency probability (1, H, W) float.')
    pred_normals = _pixel_field('pred_normals', 'Predicted normals (3, H, W) float.')
