"""MultiTaskDenseMetric at the edges where a plausible bug changes the number (values by hand)."""
import numpy as np
import pytest
import torch
from mmengine.structures import PixelData

from mmpeft.evaluation import MultiTaskDenseMetric
from mmpeft.structures import MultiTaskDataSample


def _sample(**fields) -> MultiTaskDataSample:
    s = MultiTaskDataSample(metainfo=dict(img_path='x.jpg'))
    for key, value in fields.items():
        t = torch.as_tensor(np.asarray(value, dtype=np.float32))
        setattr(s, key, PixelData(data=t if t.ndim == 3 else t[None]))
    return s


def _evaluate(metric: MultiTaskDenseMetric, samples) -> dict:
    metric.process(None, samples)
    return metric.evaluate(len(samples))


def test_saliency_pixel_exactly_at_the_threshold():
    # The literature's maxIoU (and its per-image maxF meter) binarise with pred > t, the ATRC maxF
    # (pooled, the default) with pred >= t. At t = 0.5, pred [0.5, 0.6, 0.4, 0.5], gt [1, 1, 0, 0]:
    #   pred > t:  salient [F, T, F, F]: tp = 1, fp = 0, fn = 1: IoU = 1/2; P = 1, R = 1/2
    #              per-image F (b2 = 1) = 2 * 1 * 0.5 / 1.5 = 2/3
    #   pred >= t: salient [T, T, F, T]: tp = 2, fp = 1, fn = 0: P = 2/3, R = 1
    #              pooled F (b2 = 0.3) = 1.3 * 2/3 / (0.2 + 1) = 0.7222
    gt, pred = [[1, 1, 0, 0]], [[0.5, 0.6, 0.4, 0.5]]
    m = MultiTaskDenseMetric(sal_iou_thresholds=[0.5], sal_f_thresholds=[0.5], single_task_baselines=None)
    res = _evaluate(m, [_sample(gt_sal=gt, pred_sal=pred)])
    assert res['sal/maxIoU'] == pytest.approx(50.0)
    assert res['sal/maxF'] == pytest.approx(1.3 * 2 / 3 / 1.2 * 100)
    m = MultiTaskDenseMetric(sal_maxf='per_image', sal_iou_thresholds=[0.5], sal_f_thresholds=[0.5],
                             single_task_baselines=None)
    res = _evaluate(m, [_sample(gt_sal=gt, pred_sal=pred)])
    assert res['sal/maxIoU'] == pytest.approx(50.0)
    assert res['sal/maxF'] == pytest.approx(200 / 3)


def test_saliency_ignored_pixels_do_not_count():
    # gt 255 is not scored even when predicted salient: tp = 1, fp = 0, fn = 0 -> IoU 1, F 1.
    m = MultiTaskDenseMetric(sal_iou_thresholds=[0.5], sal_f_thresholds=[0.5], single_task_baselines=None)
    res = _evaluate(m, [_sample(gt_sal=[[1, 255, 0]], pred_sal=[[0.9, 0.9, 0.1]])])
    assert res['sal/maxIoU'] == pytest.approx(100.0)
    assert res['sal/maxF'] == pytest.approx(100.0)


def test_normals_non_unit_and_opposite_predictions():
    # gt (2, 0, 0) is (1, 0, 0) normalised; pred (3, 3, 0) is 45 degrees off whatever its length
    # (unnormalised, the dot product 6 would clip to 1: 0 degrees); pred (-0.5, 0, 0) is 180 degrees.
    # mean = (45 + 180) / 2 = 112.5; median of two = their mean (within the 0.1-degree bins).
    gt = np.zeros((3, 1, 2))
    gt[0] = 2.0
    pred = np.zeros((3, 1, 2))
    pred[:, 0, 0] = (3.0, 3.0, 0.0)
    pred[:, 0, 1] = (-0.5, 0.0, 0.0)
    m = MultiTaskDenseMetric(single_task_baselines=None)
    res = _evaluate(m, [_sample(gt_normals=gt, pred_normals=pred)])
    assert res['normals/mean'] == pytest.approx(112.5, abs=1e-4)
    assert res['normals/median'] == pytest.approx(112.5, abs=0.1)
    assert res['normals/within_11.25'] == 0.0
    assert res['normals/within_30'] == 0.0


def test_normals_zero_ground_truth_pixels_are_not_scored():
    gt = np.zeros((3, 1, 2))
    gt[2, 0, 0] = 1.0                       # only pixel 0 is valid
    pred = np.zeros((3, 1, 2))
    pred[:, 0, 0] = (0.0, 1.0, 1.0)         # 45 degrees from (0, 0, 1)
    pred[:, 0, 1] = (1.0, 0.0, 0.0)         # would be 90 degrees, but its gt is the zero vector
    m = MultiTaskDenseMetric(single_task_baselines=None)
    res = _evaluate(m, [_sample(gt_normals=gt, pred_normals=pred)])
    assert res['normals/mean'] == pytest.approx(45.0, abs=1e-4)
    assert res['normals/within_22.5'] == 0.0


def test_delta_m_signs_by_hand():
    # semseg 62.5 vs baseline 50: +25 %; normals 20 vs baseline 16 (lower is better): -25 %.
    # delta_m = (25 - 25) / 2 = 0
    gt_n = np.zeros((3, 1, 1))
    gt_n[0] = 1.0
    ang = np.radians(20.0)
    pred_n = np.zeros((3, 1, 1))
    pred_n[0], pred_n[1] = np.cos(ang), np.sin(ang)
    m = MultiTaskDenseMetric(num_classes=dict(semseg=2), single_task_baselines=dict(semseg=50.0,
                                                                                    normals=16.0))
    # semseg gt [0, 1, 1, 1, 1], pred [0, 0, 1, 1, 1]: IoU0 = 1/2, IoU1 = 3/4 -> mIoU 62.5 (+25 %)
    res = _evaluate(m, [_sample(gt_semseg=[[0, 1, 1, 1, 1]], pred_semseg=[[0, 0, 1, 1, 1]],
                                gt_normals=gt_n, pred_normals=pred_n)])
    assert res['semseg/mIoU'] == pytest.approx(62.5)
    assert res['normals/mean'] == pytest.approx(20.0, abs=1e-4)
    assert res['delta_m'] == pytest.approx(0.0, abs=1e-3)
