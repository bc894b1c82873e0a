"""Metrics of the PASCAL-Context dense multi-task benchmark and the multi-task gain delta_m.

Definitions (all percentages in [0, 100], angles in degrees):

- ``semseg/mIoU``, ``parts/mIoU``: per-class IoU from a confusion matrix accumulated over the whole
  dataset, ignoring gt pixels equal to ``ignore_index``; the mean is over classes that occur in the
  ground truth or the predictions (a class with an empty union has no IoU, as in mmseg). Images
  without a person have all-ignore part labels and so add nothing to ``parts``.
- ``sal/maxIoU``: for each threshold ``t`` (default ``linspace(0.2, 0.9, 15)``) a pixel is salient
  when ``pred > t``; the IoU of the salient pixels is computed per image over its valid pixels (an
  image where both prediction and ground truth are empty scores 1), averaged over images, and the
  best threshold's mean is reported. Images without valid pixels are skipped.
- ``sal/maxF``: for each threshold, precision and recall from true/false positive and false negative
  counts summed over all pixels of the dataset (not averaged per image: large salient objects weigh
  more, and images with nothing predicted need no special case), then
  ``F = (1 + b2) P R / (b2 P + R)`` with ``b2 = 0.3``; the best threshold's F is reported.
- ``normals/mean``, ``normals/median``: angle between predicted and ground-truth normals (both
  normalised) over all valid pixels of the dataset (gt not the zero vector). The median comes from
  a histogram with 0.1-degree bins, placed inside its bin by linear interpolation (within 0.1
  degrees of the exact median; keeping every pixel's error of the full val set would not fit in
  memory).
  ``normals/within_<t>``: percentage of valid pixels with error ``< t`` (t = 11.25, 22.5, 30 by
  default).
- ``delta_m``: ``mean_t s_t (M_t - B_t) / B_t * 100`` over evaluated tasks that have a single-task
  baseline ``B_t``, with ``M_t`` the task's primary metric (``semseg/mIoU``, ``parts/mIoU``,
  ``sal/maxIoU``, ``normals/mean``) and ``s_t = +1``, or ``-1`` for normals (lower is better).
  The default baselines are Polyhistor's single-task full fine-tuning of Swin-T.
"""
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.structures import BaseDataElement

from mmpeft.registry import METRICS
from mmpeft.structures.multitask_data_sample import TASKS

#: Polyhistor, Tables 1/2/5/6: single-task full fine-tuning, Swin-T (ImageNet-1k), PASCAL-Context.
SWIN_T_SINGLE_TASK = dict(semseg=67.21, parts=61.93, sal=62.35, normals=17.97)

#: Metric that stands for each task in delta_m, and whether higher is better.
PRIMARY_METRICS = dict(semseg=('semseg/mIoU', True), parts=('parts/mIoU', True),
                       sal=('sal/maxIoU', True), normals=('normals/mean', False))

_ANGLE_BIN = 0.1                      # degrees per histogram bin for the median
_NUM_ANGLE_BINS = int(round(180 / _ANGLE_BIN))


def _get(sample: dict, key: str) -> Optional[np.ndarray]:
    """``sample[key]['data']`` as a numpy array, or None when absent."""
    field = sample.get(key)
    if field is None:
        return None
    data = field['data'] if isinstance(field, dict) else field.data
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    return np.asarray(data)


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int,
                     ignore_index: int) -> np.ndarray:
    """``(C, C)`` int64 counts, rows = ground truth, columns = prediction; ignored gt skipped."""
    valid = gt != ignore_index
    gt_v, pred_v = gt[valid].astype(np.int64), pred[valid].astype(np.int64)
    for name, arr in (('ground truth', gt_v), ('prediction', pred_v)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f'{name} holds class ids outside [0, {num_classes}): '
                             f'{np.unique(arr[(arr < 0) | (arr >= num_classes)])[:5].tolist()}')
    return np.bincount(gt_v * num_classes + pred_v,
                       minlength=num_classes**2).reshape(num_classes, num_classes)


def miou(confusion: np.ndarray) -> float:
    """Mean IoU (%) over classes with a non-empty union."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    if not present.any():
        return float('nan')
    return float(np.mean(tp[present] / union[present]) * 100)


def saliency_counts(pred: np.ndarray, gt: np.ndarray, thresholds: np.ndarray,
                    ignore_index: int) -> np.ndarray:
    """``(T, 4)`` int64 true positives, false positives, false negatives, true negatives per
    threshold, over pixels whose gt is not ``ignore_index``."""
    valid = gt != ignore_index
    pred_v, gt_v = pred[valid].astype(np.float64), gt[valid] == 1
    pos = np.sort(pred_v[gt_v])
    neg = np.sort(pred_v[~gt_v])
    # Number of scores > t in a sorted array: its length minus the count <= t.
    tp = pos.size - np.searchsorted(pos, thresholds, side='right')
    fp = neg.size - np.searchsorted(neg, thresholds, side='right')
    fn = pos.size - tp
    tn = neg.size - fp
    return np.stack([tp, fp, fn, tn], 1).astype(np.int64)


def angular_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Angles (degrees) between ``(3, H, W)`` normal maps at pixels where ``gt`` is non-zero."""
    gt_f = gt.reshape(3, -1).astype(np.float64)
    pred_f = pred.reshape(3, -1).astype(np.float64)
    gt_norm = np.linalg.norm(gt_f, axis=0)
    valid = gt_norm > 1e-6
    g = gt_f[:, valid] / gt_norm[valid]
    p = pred_f[:, valid]
    p = p / np.maximum(np.linalg.norm(p, axis=0), 1e-12)  # a zero prediction scores 90 degrees
    return np.degrees(np.arccos(np.clip((g * p).sum(0), -1.0, 1.0)))


def histogram_median(hist: np.ndarray, bin_width: float) -> float:
    """Median of the values binned in ``hist`` (bin ``i`` holds ``[i w, (i + 1) w)``).

    As ``numpy.median``: the middle order statistic, or the mean of the two middle ones; each is
    placed inside its bin assuming the bin's values are spread evenly over it.
    """
    total = int(hist.sum())
    if total == 0:
        return float('nan')
    cum = np.cumsum(hist)

    def kth(k: int) -> float:  # k-th smallest value, 0-based
        i = int(np.searchsorted(cum, k, side='right'))
        before = cum[i - 1] if i > 0 else 0
        return (i + (k - before + 0.5) / hist[i]) * bin_width

    return float((kth((total - 1) // 2) + kth(total // 2)) / 2)


@METRICS.register_module()
class MultiTaskDenseMetric(BaseMetric):
    """PASCAL-Context multi-task metrics; see the module docstring for every definition.

    Reads ``pred_<task>`` / ``gt_<task>`` of each data sample (:class:`MultiTaskDataSample` or its
    ``to_dict()``), both at the same size. Returns, for the evaluated tasks: ``semseg/mIoU``,
    ``parts/mIoU``, ``sal/maxIoU``, ``sal/maxF``, ``normals/mean``, ``normals/median``,
    ``normals/within_11.25``, ``normals/within_22.5``, ``normals/within_30``, and ``delta_m``.

    Args:
        tasks: tasks to evaluate; every sample must carry their prediction and ground truth.
            ``None`` evaluates whatever tasks each sample has both for.
        num_classes: classes per segmentation task, default ``dict(semseg=21, parts=7)``.
        ignore_index: ground-truth label not scored.
        sal_thresholds: saliency thresholds, default ``numpy.linspace(0.2, 0.9, 15)``.
        sal_beta_sq: ``beta^2`` of the F-measure.
        normal_thresholds: angles (degrees) of the ``within_<t>`` percentages.
        single_task_baselines: ``{task: B_t}`` for ``delta_m``, in the units of the task's primary
            metric; ``None`` or ``{}`` disables ``delta_m``.
        collect_device, prefix: as :class:`mmengine.evaluator.BaseMetric`.
    """

    # Names already start with their task ('semseg/mIoU'); '' (not None) also keeps mmengine from
    # warning that no prefix is set.
    default_prefix: Optional[str] = ''

    def __init__(self,
                 tasks: Optional[Sequence[str]] = None,
                 num_classes: Optional[Dict[str, int]] = None,
                 ignore_index: int = 255,
                 sal_thresholds: Optional[Sequence[float]] = None,
                 sal_beta_sq: float = 0.3,
                 normal_thresholds: Sequence[float] = (11.25, 22.5, 30.0),
                 single_task_baselines: Optional[Dict[str, float]] = SWIN_T_SINGLE_TASK,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if tasks is not None:
            unknown = set(tasks) - set(TASKS)
            if unknown:
                raise ValueError(f'unknown tasks {sorted(unknown)}; known: {TASKS}')
        self.tasks = None if tasks is None else [t for t in TASKS if t in tasks]
        self.num_classes = dict(semseg=21, parts=7)
        self.num_classes.update(num_classes or {})
        self.ignore_index = ignore_index
        self.sal_thresholds = np.asarray(
            np.linspace(0.2, 0.9, 15) if sal_thresholds is None else sal_thresholds, np.float64)
        self.sal_beta_sq = float(sal_beta_sq)
        self.normal_thresholds = tuple(float(t) for t in normal_thresholds)
        baselines = dict(single_task_baselines or {})
        unknown = set(baselines) - set(TASKS)
        if unknown:
            raise ValueError(f'single_task_baselines has unknown tasks {sorted(unknown)}')
        self.single_task_baselines = baselines

    # ------------------------------------------------------------------ per batch
    def process(self, data_batch: Optional[dict],
                data_samples: Sequence[Union[dict, BaseDataElement]]) -> None:
        """Turn each sample into small per-task statistics (one ``self.results`` entry each)."""
        for sample in data_samples:
            if isinstance(sample, BaseDataElement):
                sample = sample.to_dict()
            where = sample.get('img_path', '<sample>')
            stats = {}
            for task in self.tasks or TASKS:
                pred, gt = _get(sample, f'pred_{task}'), _get(sample, f'gt_{task}')
                if pred is None or gt is None:
                    if self.tasks is not None:
                        raise KeyError(f'{where}: task {task!r} needs pred_{task} and gt_{task}')
                    continue
                if pred.shape[-2:] != gt.shape[-2:]:
                    raise ValueError(f'{where}: pred_{task} is {tuple(pred.shape)} but gt_{task} '
                                     f'is {tuple(gt.shape)}; predict at the original size')
                stats[task] = getattr(self, f'_stats_{task}')(pred, gt)
            self.results.append(stats)

    def _stats_semseg(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        return confusion_matrix(pred.reshape(gt.shape), gt, self.num_classes['semseg'],
                                self.ignore_index)

    def _stats_parts(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        return confusion_matrix(pred.reshape(gt.shape), gt, self.num_classes['parts'],
                                self.ignore_index)

    def _stats_sal(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        return saliency_counts(pred.reshape(gt.shape), gt, self.sal_thresholds, self.ignore_index)

    def _stats_normals(self, pred: np.ndarray, gt: np.ndarray) -> dict:
        err = angular_errors(pred, gt)
        bins = np.minimum((err / _ANGLE_BIN).astype(np.int64), _NUM_ANGLE_BINS - 1)
        return dict(sum=float(err.sum()), count=int(err.size),
                    within=np.array([(err < t).sum() for t in self.normal_thresholds], np.int64),
                    hist=np.bincount(bins, minlength=_NUM_ANGLE_BINS).astype(np.int32))

    # ------------------------------------------------------------------ whole dataset
    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Aggregate the per-sample statistics into the metrics of the module docstring."""
        metrics: Dict[str, float] = {}
        for task in TASKS:
            per_sample = [r[task] for r in results if task in r]
            if per_sample:
                metrics.update(getattr(self, f'_compute_{task}')(per_sample))

        gains = []
        for task, baseline in self.single_task_baselines.items():
            key, higher_better = PRIMARY_METRICS[task]
            if key in metrics and np.isfinite(metrics[key]):
                sign = 1.0 if higher_better else -1.0
                gains.append(sign * (metrics[key] - baseline) / baseline * 100)
        if gains:
            metrics['delta_m'] = float(np.mean(gains))
        print_log('multi-task metrics: ' + ', '.join(f'{k}={v:.2f}' for k, v in metrics.items()),
                  logger='current')
        return metrics

    def _compute_semseg(self, stats: List[np.ndarray]) -> Dict[str, float]:
        return {'semseg/mIoU': miou(np.sum(stats, axis=0))}

    def _compute_parts(self, stats: List[np.ndarray]) -> Dict[str, float]:
        return {'parts/mIoU': miou(np.sum(stats, axis=0))}

    def _compute_sal(self, stats: List[np.ndarray]) -> Dict[str, float]:
        counts = np.stack(stats).astype(np.float64)          # (N, T, 4)
        counts = counts[counts[:, 0].sum(-1) > 0]             # drop images without valid pixels
        if len(counts) == 0:
            return {'sal/maxIoU': float('nan'), 'sal/maxF': float('nan')}
        tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
        union = tp + fp + fn
        # An image whose prediction and gt are both empty at a threshold is a perfect 1.
        iou = np.where(union > 0, tp / np.maximum(union, 1), 1.0)
        total = counts.sum(0)                                # (T, 4)
        p = np.divide(total[:, 0], total[:, 0] + total[:, 1],
                      out=np.zeros(len(total)), where=(total[:, 0] + total[:, 1]) > 0)
        r = np.divide(total[:, 0], total[:, 0] + total[:, 2],
                      out=np.zeros(len(total)), where=(total[:, 0] + total[:, 2]) > 0)
        b2 = self.sal_beta_sq
        f = np.divide((1 + b2) * p * r, b2 * p + r, out=np.zeros(len(total)),
                      where=(b2 * p + r) > 0)
        return {'sal/maxIoU': float(iou.mean(0).max() * 100), 'sal/maxF': float(f.max() * 100)}

    def _compute_normals(self, stats: List[dict]) -> Dict[str, float]:
        count = sum(s['count'] for s in stats)
        if count == 0:
            return {'normals/mean': float('nan')}
        out = {'normals/mean': sum(s['sum'] for s in stats) / count,
               'normals/median': histogram_median(np.sum([s['hist'] for s in stats], 0,
                                                         dtype=np.int64), _ANGLE_BIN)}
        within = np.sum([s['within'] for s in stats], 0)
        for t, n in zip(self.normal_thresholds, within):
            out[f'normals/within_{t:g}'] = float(n / count * 100)
        return out
