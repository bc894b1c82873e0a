"""Metrics of the PASCAL-Context dense multi-task benchmark and the multi-task gain delta_m.

Definitions (all percentages in [0, 100], angles in degrees):

- ``semseg/mIoU``, ``parts/mIoU``: per-class IoU from a confusion matrix accumulated over the whole
  dataset, ignoring gt pixels equal to ``ignore_index``. By default (``miou_absent='zero'``, the
  PASCAL-Context multi-task evaluation code of the ATRC / MTI-Net lineage) the mean is over all
  classes, and a class that appears in neither the ground truth nor the predictions of the evaluated
  set scores IoU 0 (this only matters on subsets, where a class can be missing).
  ``miou_absent='skip'`` averages over the classes with a non-empty union only (as mmseg does). Either
  way the result is NaN when no pixel was scored at all.
- ``parts``: images without a person have all-ignore part labels and add nothing. By default
  (``parts_background_only='ignore'``) an image whose ground truth has no part pixel at all (every
  non-ignored pixel is background 0: an image whose persons have no part masks) adds nothing either,
  its predictions included, as the reference's transform turns such a map into ignore;
  ``parts_background_only='score'`` scores it as background.
- ``sal/maxIoU``: for each threshold ``t`` of ``sal_iou_thresholds`` (default
  ``linspace(0.2, 0.9, 15)``) a pixel is salient when ``pred > t``; the IoU of the salient pixels is
  computed per image over its valid pixels (an image where both prediction and ground truth are empty
  scores 1), averaged over images, and the best threshold's mean is reported. Images without valid
  pixels are skipped. (The reference's per-image meter; grid and comparison differ from maxF's default.)
- ``sal/maxF``, ``sal_maxf='pooled'`` (default; the ATRC / MTI-Net lineage): for each threshold of
  ``sal_f_thresholds`` (default 0.05, 0.10, ..., 0.95, 19 values, the float32 values of the
  reference's ``torch.arange(0.05, 1, 0.05)``) a pixel is salient when ``pred >= t``; precision and
  recall come from true/false positive and false negative counts summed over all valid pixels of the
  dataset (not averaged per image: large salient objects weigh more, and images with nothing
  predicted need no special case), then ``F = (1 + b2) P R / (b2 P + R)`` with ``b2 = sal_beta_sq``
  (default 0.3), 0 where undefined; the best threshold's F is reported.
  ``sal_maxf='per_image'`` (the older Multi-Task-Learning-PyTorch / ASTMT meter): thresholds default
  to the maxIoU grid ``linspace(0.2, 0.9, 15)`` with ``pred > t`` (that meter's grid and comparison);
  per image ``P = tp / (tp + fp + 1e-12)``, ``R = tp / (tp + fn + 1e-12)`` (0 for an image with
  nothing predicted / nothing salient), averaged over the images with valid pixels, then
  ``F = (1 + b2) mean(P) mean(R) / (b2 mean(P) + mean(R) + 1e-12)`` with ``b2`` default 1.
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
from typing import Dict, List, Optional, Sequence, Tuple, Union

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


MIOU_ABSENT = ('zero', 'skip')
SAL_MAXF_MODES = ('pooled', 'per_image')
PARTS_BACKGROUND_ONLY = ('ignore', 'score')


def miou(confusion: np.ndarray, absent: str = 'zero') -> float:
    """Mean IoU (%) of a ``(C, C)`` confusion matrix.

    ``absent='zero'``: mean over all ``C`` classes, a class with an empty union (in neither ground
    truth nor prediction) counting as IoU 0. ``absent='skip'``: mean over classes with a non-empty
    union. NaN when the matrix is empty (no pixel scored).
    """
    if absent not in MIOU_ABSENT:
        raise ValueError(f'absent={absent!r}; expected one of {MIOU_ABSENT}')
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    if not confusion.any():
        return float('nan')
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
    if absent == 'skip':
        present = union > 0
        return float(np.mean(iou[present]) * 100)
    return float(np.mean(iou) * 100)


def reference_sal_f_thresholds() -> np.ndarray:
    """``(19,)`` float64: 0.05, 0.10, ..., 0.95 exactly as the reference builds them.

    The reference compares float32 probabilities with ``torch.arange(0.05, 1, 0.05)`` (float32, where
    e.g. 0.6 is 0.59999996); using those values makes ``pred >= t`` agree with it at every pixel.
    """
    return torch.arange(0.05, 1, 0.05, dtype=torch.float32).double().numpy()


def sorted_saliency_scores(pred: np.ndarray, gt: np.ndarray,
                           ignore_index: int) -> Tuple[np.ndarray, np.ndarray]:
    """Predictions at salient (gt 1) and at non-salient valid pixels, each ``(n,)`` float64 sorted,
    so that one sort serves any number of thresholds."""
    valid = gt != ignore_index
    pred_v, gt_v = pred[valid].astype(np.float64), gt[valid] == 1
    return np.sort(pred_v[gt_v]), np.sort(pred_v[~gt_v])


def counts_at_thresholds(pos: np.ndarray, neg: np.ndarray, thresholds: np.ndarray,
                         inclusive: bool = False) -> np.ndarray:
    """``(T, 4)`` int64 true positives, false positives, false negatives, true negatives per
    threshold from :func:`sorted_saliency_scores`; a pixel is predicted salient where ``pred > t``,
    or ``pred >= t`` when ``inclusive``."""
    # In a sorted array, size - searchsorted(t, 'right') counts the scores > t and
    # size - searchsorted(t, 'left') those >= t.
    side = 'left' if inclusive else 'right'
    tp = pos.size - np.searchsorted(pos, thresholds, side=side)
    fp = neg.size - np.searchsorted(neg, thresholds, side=side)
    return np.stack([tp, fp, pos.size - tp, neg.size - fp], 1).astype(np.int64)


def saliency_counts(pred: np.ndarray, gt: np.ndarray, thresholds: np.ndarray,
                    ignore_index: int, inclusive: bool = False) -> np.ndarray:
    """``(T, 4)`` int64 true positives, false positives, false negatives, true negatives per
    threshold, over pixels whose gt is not ``ignore_index``; a pixel is predicted salient where
    ``pred > t``, or ``pred >= t`` when ``inclusive``."""
    pos, neg = sorted_saliency_scores(pred, gt, ignore_index)
    return counts_at_thresholds(pos, neg, np.asarray(thresholds, np.float64), inclusive)


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
        miou_absent: ``'zero'`` (default, the reference): mIoU over all classes, a class in neither
            ground truth nor prediction scoring 0; ``'skip'``: over classes that occur only.
        parts_background_only: ``'ignore'`` (default, the reference): a parts ground truth with no
            part pixel (all background, or all ignore) is not scored; ``'score'``: scored as
            background.
        sal_iou_thresholds: maxIoU thresholds (``pred > t``), default ``numpy.linspace(0.2, 0.9, 15)``.
        sal_maxf: ``'pooled'`` (default, ATRC): F from counts pooled over the dataset, ``pred >= t``;
            ``'per_image'`` (Multi-Task-Learning-PyTorch): F of the per-image precision and recall
            averaged over images, ``pred > t``.
        sal_f_thresholds: maxF thresholds, ascending; default 0.05, 0.10, ..., 0.95 for
            ``'pooled'``, ``numpy.linspace(0.2, 0.9, 15)`` for ``'per_image'``.
        sal_beta_sq: ``beta^2`` of the F-measure; default 0.3 for ``'pooled'``, 1 for
            ``'per_image'``.
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
                 miou_absent: str = 'zero',
                 parts_background_only: str = 'ignore',
                 sal_iou_thresholds: Optional[Sequence[float]] = None,
                 sal_maxf: str = 'pooled',
                 sal_f_thresholds: Optional[Sequence[float]] = None,
                 sal_beta_sq: Optional[float] = None,
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
        for name, value, choices in (('miou_absent', miou_absent, MIOU_ABSENT),
                                     ('parts_background_only', parts_background_only,
                                      PARTS_BACKGROUND_ONLY),
                                     ('sal_maxf', sal_maxf, SAL_MAXF_MODES)):
            if value not in choices:
                raise ValueError(f'MultiTaskDenseMetric: {name}={value!r}; expected one of {choices}')
        self.miou_absent = miou_absent
        self.parts_background_only = parts_background_only
        self.sal_maxf = sal_maxf
        pooled = sal_maxf == 'pooled'
        if sal_f_thresholds is None:
            sal_f_thresholds = reference_sal_f_thresholds() if pooled else np.linspace(0.2, 0.9, 15)
        self.sal_iou_thresholds = self._ascending(
            'sal_iou_thresholds',
            np.linspace(0.2, 0.9, 15) if sal_iou_thresholds is None else sal_iou_thresholds)
        self.sal_f_thresholds = self._ascending('sal_f_thresholds', sal_f_thresholds)
        # The ATRC meter counts a pixel exactly at the threshold as salient, the per-image meter not.
        self.sal_f_inclusive = pooled
        self.sal_beta_sq = float((0.3 if pooled else 1.0) if sal_beta_sq is None else sal_beta_sq)
        self.normal_thresholds = tuple(float(t) for t in normal_thresholds)
        baselines = dict(single_task_baselines or {})
        unknown = set(baselines) - set(TASKS)
        if unknown:
            raise ValueError(f'single_task_baselines has unknown tasks {sorted(unknown)}')
        self.single_task_baselines = baselines

    @staticmethod
    def _ascending(name: str, thresholds: Sequence[float]) -> np.ndarray:
        """``(T,)`` float64 thresholds, checked to be a non-empty ascending 1-d list."""
        arr = np.asarray(thresholds, np.float64)
        if arr.ndim != 1 or arr.size == 0 or np.any(np.diff(arr) <= 0):
            raise ValueError(f'MultiTaskDenseMetric: {name} must be a non-empty, strictly ascending '
                             f'list of floats, got {np.asarray(thresholds).tolist()}')
        return arr

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
        confusion = confusion_matrix(pred.reshape(gt.shape), gt, self.num_classes['parts'],
                                     self.ignore_index)
        if self.parts_background_only == 'ignore' and not confusion[1:].any():
            # No gt pixel of any part (rows 1.. empty): a person without part masks, or no person.
            # The reference turns such a map into ignore, so its predictions are not scored either.
            return np.zeros_like(confusion)
        return confusion

    def _stats_sal(self, pred: np.ndarray, gt: np.ndarray) -> Dict[str, np.ndarray]:
        """``iou``: ``(T_iou, 4)`` and ``f``: ``(T_f, 4)`` counts of :func:`saliency_counts`."""
        pos, neg = sorted_saliency_scores(pred.reshape(gt.shape), gt, self.ignore_index)
        return dict(iou=counts_at_thresholds(pos, neg, self.sal_iou_thresholds, inclusive=False),
                    f=counts_at_thresholds(pos, neg, self.sal_f_thresholds, inclusive=self.sal_f_inclusive))

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
        return {'semseg/mIoU': miou(np.sum(stats, axis=0), self.miou_absent)}

    def _compute_parts(self, stats: List[np.ndarray]) -> Dict[str, float]:
        return {'parts/mIoU': miou(np.sum(stats, axis=0), self.miou_absent)}

    def _compute_sal(self, stats: List[Dict[str, np.ndarray]]) -> Dict[str, float]:
        return {'sal/maxIoU': self._max_iou(np.stack([s['iou'] for s in stats])),
                'sal/maxF': self._max_f(np.stack([s['f'] for s in stats]))}

    @staticmethod
    def _max_iou(counts: np.ndarray) -> float:
        """Best threshold's IoU averaged over images (%), from ``(N, T, 4)`` counts."""
        counts = counts.astype(np.float64)
        counts = counts[counts[:, 0].sum(-1) > 0]             # drop images without valid pixels
        if len(counts) == 0:
            return float('nan')
        tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
        union = tp + fp + fn
        # An image whose prediction and gt are both empty at a threshold is a perfect 1.
        iou = np.where(union > 0, tp / np.maximum(union, 1), 1.0)
        return float(iou.mean(0).max() * 100)

    def _max_f(self, counts: np.ndarray) -> float:
        """Best threshold's F-measure (%) from ``(N, T, 4)`` counts, as ``self.sal_maxf`` says."""
        counts = counts.astype(np.float64)
        counts = counts[counts[:, 0].sum(-1) > 0]
        if len(counts) == 0:
            return float('nan')
        b2 = self.sal_beta_sq
        if self.sal_maxf == 'per_image':
            tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
            # The meter's 1e-12 makes an empty prediction's precision (and an empty gt's recall) 0.
            p = (tp / (tp + fp + 1e-12)).mean(0)
            r = (tp / (tp + fn + 1e-12)).mean(0)
            return float(((1 + b2) * p * r / (b2 * p + r + 1e-12)).max() * 100)
        total = counts.sum(0)                                # (T, 4)
        tp, fp, fn = total[:, 0], total[:, 1], total[:, 2]
        zeros = np.zeros(len(total))
        # 0/0 precision (nothing predicted) or recall (nothing salient) and 0/0 F count as 0.
        p = np.divide(tp, tp + fp, out=zeros.copy(), where=(tp + fp) > 0)
        r = np.divide(tp, tp + fn, out=zeros.copy(), where=(tp + fn) > 0)
        f = np.divide((1 + b2) * p * r, b2 * p + r, out=zeros.copy(), where=(b2 * p + r) > 0)
        return float(f.max() * 100)

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
