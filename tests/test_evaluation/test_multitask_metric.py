"""MultiTaskDenseMetric against values computed by hand on tiny arrays."""
import numpy as np
import pytest
import torch
from mmengine.structures import PixelData

from mmpeft.evaluation import MultiTaskDenseMetric
from mmpeft.structures import MultiTaskDataSample


def sample(**fields):
    """A MultiTaskDataSample with the given pred_/gt_ fields from nested lists / arrays."""
    s = MultiTaskDataSample(metainfo=dict(img_path='x.jpg'))
    for key, value in fields.items():
        t = torch.as_tensor(np.asarray(value))
        if t.ndim == 2:
            t = t[None]
        setattr(s, key, PixelData(data=t))
    return s


def evaluate(metric, samples):
    metric.process(None, samples)
    return metric.evaluate(len(samples))


def test_semseg_miou_accumulates_a_confusion_matrix():
    # image 1: gt [[0,0,1],[1,2,255]]  pred [[0,1,1],[1,2,0]]
    # image 2: gt [[2,2]]              pred [[2,0]]
    # confusion (rows gt, cols pred; the 255 pixel skipped):
    #   0: [1,1,0]  1: [0,2,0]  2: [1,0,2]
    # IoU0 = 1/(2+2-1) = 1/3, IoU1 = 2/(2+3-2) = 2/3, IoU2 = 2/(3+2-2) = 2/3 -> mean 5/9
    m = MultiTaskDenseMetric(num_classes=dict(semseg=3), single_task_baselines=None)
    res = evaluate(m, [
        sample(gt_semseg=[[0, 0, 1], [1, 2, 255]], pred_semseg=[[0, 1, 1], [1, 2, 0]]),
        sample(gt_semseg=[[2, 2]], pred_semseg=[[2, 0]])])
    assert res == pytest.approx({'semseg/mIoU': 500 / 9})
    # Per-image means would differ: accumulation over the dataset is what is reported.


def test_absent_classes_are_left_out_of_the_mean_when_skipped():
    # 4 classes, only 0 and 1 ever appear. Confusion: gt0->0: 1, gt1->0: 1, gt1->1: 1
    # IoU0 = 1/(1+2-1) = 1/2, IoU1 = 1/(2+1-1) = 1/2 -> 50 (classes 2, 3 have no IoU, not 0)
    # (the default, miou_absent='zero', gives 25: test_metric_literature_parity.py)
    m = MultiTaskDenseMetric(num_classes=dict(semseg=4), miou_absent='skip', single_task_baselines=None)
    res = evaluate(m, [sample(gt_semseg=[[0, 1]], pred_semseg=[[0, 0]]),
                       sample(gt_semseg=[[1]], pred_semseg=[[1]])])
    assert res == pytest.approx({'semseg/mIoU': 50.0})


def test_out_of_range_prediction_and_shape_mismatch_raise():
    m = MultiTaskDenseMetric(num_classes=dict(semseg=3))
    with pytest.raises(ValueError, match=r'outside \[0, 3\).*\[7\]'):
        m.process(None, [sample(gt_semseg=[[0, 1]], pred_semseg=[[0, 7]])])
    with pytest.raises(ValueError,
                       match=r'x\.jpg: pred_sal is \(1, 1, 3\) but gt_sal is \(1, 1, 2\)'):
        m.process(None, [sample(gt_sal=[[0, 1]], pred_sal=[[0.1, 0.2, 0.3]])])
    with pytest.raises(KeyError, match="'normals' needs pred_normals"):
        MultiTaskDenseMetric(tasks=['normals']).process(
            None, [sample(gt_sal=[[0]], pred_sal=[[0.]])])


def test_person_less_images_add_nothing_to_parts():
    # 3 part classes; image with a person: gt [[0,1,2]] pred [[0,1,1]] -> IoU0 1, IoU1 1/2, IoU2 0 -> 50
    with_person = sample(gt_parts=[[0, 1, 2]], pred_parts=[[0, 1, 1]])
    no_person = sample(gt_parts=[[255, 255, 255]], pred_parts=[[1, 2, 2]])
    kw = dict(num_classes=dict(parts=3), single_task_baselines=None)
    only = evaluate(MultiTaskDenseMetric(**kw), [with_person])
    both = evaluate(MultiTaskDenseMetric(**kw), [with_person, no_person])
    assert only == pytest.approx({'parts/mIoU': 50.0}) and both == only


def test_saliency_max_iou_and_max_f_by_hand():
    # thresholds 0.3 and 0.6 for both; a pixel is salient when pred > t (maxIoU) or pred >= t
    # (maxF, pooled): no pixel lies on a threshold, so the two agree here
    # image A: gt [1,1,0,0]  pred [0.9,0.5,0.4,0.1]
    #   t=.3: pred+ {0,1,2}: tp2 fp1 fn0 -> IoU 2/3;  t=.6: {0}: tp1 fp0 fn1 -> IoU 1/2
    # image B: gt [0,0,255]  pred [0.2,0.7,0.9]   (third pixel ignored)
    #   t=.3: {1}: tp0 fp1 fn0 -> IoU 0;  t=.6: {1}: IoU 0
    # image C: gt [0,0] pred [0.1,0.2]: nothing predicted, nothing to find -> IoU 1 at both
    # mean IoU: t=.3 (2/3+0+1)/3 = 5/9, t=.6 (1/2+0+1)/3 = 1/2 -> maxIoU 5/9
    # dataset counts: t=.3 tp2 fp2 fn0 -> P 1/2 R 1; t=.6 tp1 fp1 fn1 -> P 1/2 R 1/2
    # F(b2=.3) = 1.3 P R / (.3 P + R): t=.3 0.65/1.15, t=.6 0.325/0.65 = 0.5 -> maxF 0.65/1.15
    m = MultiTaskDenseMetric(sal_iou_thresholds=[0.3, 0.6], sal_f_thresholds=[0.3, 0.6],
                             single_task_baselines=None)
    res = evaluate(m, [sample(gt_sal=[[1, 1, 0, 0]], pred_sal=[[0.9, 0.5, 0.4, 0.1]]),
                       sample(gt_sal=[[0, 0, 255]], pred_sal=[[0.2, 0.7, 0.9]]),
                       sample(gt_sal=[[0, 0]], pred_sal=[[0.1, 0.2]])])
    assert res == pytest.approx({'sal/maxIoU': 500 / 9, 'sal/maxF': 65 / 1.15})


def test_saliency_default_thresholds_and_all_ignored_image():
    m = MultiTaskDenseMetric(single_task_baselines=None)
    np.testing.assert_allclose(m.sal_iou_thresholds, np.arange(15) * 0.05 + 0.2)
    # 0.22 is salient only at t=0.2; 0.88 up to t=0.85: best is a t in (0.22, 0.88): IoU 1
    # (maxF: 0.05 ... 0.95, a t in (0.22, 0.88] is perfect too)
    res = evaluate(m, [sample(gt_sal=[[1, 0]], pred_sal=[[0.88, 0.22]]),
                       sample(gt_sal=[[255, 255]], pred_sal=[[1.0, 1.0]])])   # skipped
    assert res == pytest.approx({'sal/maxIoU': 100.0, 'sal/maxF': 100.0})
    # with a prediction below every threshold (maxIoU's lowest is 0.2, maxF's 0.05) the IoU is 0
    # everywhere and nothing is predicted: P = R = 0 -> F = 0
    res = evaluate(m, [sample(gt_sal=[[1, 0]], pred_sal=[[0.04, 0.0]])])
    assert res == pytest.approx({'sal/maxIoU': 0.0, 'sal/maxF': 0.0})


def test_normals_angles_by_hand():
    # gt (columns = pixels): +x, +x, +y, +z, zero (invalid)
    gt = np.array([[1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0]], np.float32)[:, None]
    # pred: +x scaled by 3 (0 deg), +y (90 deg), +y rotated by 20 deg in the x-y plane (20 deg),
    # -z (180 deg), anything at the invalid pixel
    s20, c20 = np.sin(np.deg2rad(20)), np.cos(np.deg2rad(20))
    pred = np.array([[3, 0, s20, 0, 1], [0, 1, c20, 0, 0], [0, 0, 0, -1, 0]], np.float32)[:, None]
    m = MultiTaskDenseMetric(single_task_baselines=None)
    res = evaluate(m, [sample(gt_normals=gt, pred_normals=pred)])
    assert res['normals/mean'] == pytest.approx((0 + 90 + 20 + 180) / 4)
    # median of {0, 20, 90, 180} is 55 (histogram-based: within a 0.1 degree bin)
    assert res['normals/median'] == pytest.approx(55, abs=0.1)
    assert res['normals/within_11.25'] == pytest.approx(25)
    assert res['normals/within_22.5'] == pytest.approx(50)
    assert res['normals/within_30'] == pytest.approx(50)


def test_normals_median_over_many_pixels():
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 60, 5001)
    t = np.deg2rad(angles)
    gt = np.stack([np.zeros_like(t), np.zeros_like(t), np.ones_like(t)])[:, None]
    pred = np.stack([np.sin(t), np.zeros_like(t), np.cos(t)])[:, None]
    res = evaluate(MultiTaskDenseMetric(single_task_baselines=None),
                   [sample(gt_normals=gt, pred_normals=pred)])
    assert res['normals/mean'] == pytest.approx(angles.mean(), abs=1e-6)
    assert res['normals/median'] == pytest.approx(np.median(angles), abs=0.02)
    assert res['normals/within_30'] == pytest.approx((angles < 30).mean() * 100, abs=1e-9)


def test_delta_m_sign_convention():
    # baselines: semseg 50 (higher is better), normals 20 (lower is better)
    m = MultiTaskDenseMetric(num_classes=dict(semseg=2),
                             single_task_baselines=dict(semseg=50.0, normals=20.0))
    # semseg: gt 11 x class 0 + 9 x class 1; pred gets 3 of the class-1 pixels wrong
    # IoU0 = 11 / (11 + 14 - 11) = 11/14, IoU1 = 6 / 9 = 2/3
    gt_sem = np.array([[0] * 11 + [1] * 9])
    pred_sem = np.array([[0] * 14 + [1] * 6])
    # normals: one pixel 18 degrees off -> mean error 18, 10 % below the baseline: a +10 % gain
    t = np.deg2rad(18)
    gt_n = np.array([[0.0], [0.0], [1.0]])[:, None]
    pred_n = np.array([[np.sin(t)], [0.0], [np.cos(t)]])[:, None]
    res = evaluate(m, [sample(gt_semseg=gt_sem, pred_semseg=pred_sem, gt_normals=gt_n,
                              pred_normals=pred_n)])
    miou = (11 / 14 + 2 / 3) / 2 * 100
    assert res['semseg/mIoU'] == pytest.approx(miou)
    assert res['normals/mean'] == pytest.approx(18)
    assert res['delta_m'] == pytest.approx(((miou - 50) / 50 * 100 + 10.0) / 2)
    # a worse normal error is a loss
    m = MultiTaskDenseMetric(single_task_baselines=dict(normals=15.0))
    res = evaluate(m, [sample(gt_normals=gt_n, pred_normals=pred_n)])
    assert res['delta_m'] == pytest.approx(-20.0)


def test_default_baselines_are_polyhistor_swin_t_single_task():
    # at exactly the single-task numbers delta_m is 0; tasks absent from the data are skipped
    m = MultiTaskDenseMetric()
    assert m.single_task_baselines == dict(semseg=67.21, parts=61.93, sal=62.35, normals=17.97)
    t = np.deg2rad(17.97)
    res = evaluate(m, [sample(gt_normals=np.array([[0.0], [0.0], [1.0]])[:, None],
                              pred_normals=np.array([[np.sin(t)], [0.0], [np.cos(t)]])[:, None])])
    assert set(res) == {'normals/mean', 'normals/median', 'normals/within_11.25',
                        'normals/within_22.5', 'normals/within_30', 'delta_m'}
    assert res['delta_m'] == pytest.approx(0.0, abs=1e-9)


def test_through_evaluator_with_subset_of_tasks():
    from mmengine.evaluator import Evaluator
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        evaluator = Evaluator(dict(type='MultiTaskDenseMetric', tasks=['sal', 'parts'],
                                   num_classes=dict(parts=2),
                                   single_task_baselines=dict(sal=50.0, parts=40.0)))
    # sal: right at every threshold in (0.05, 0.95) -> 100
    # parts (2 classes): gt [0,1,1] pred [0,1,0]: IoU0 = 1/(1+2-1) = 1/2, IoU1 = 1/(2+1-1) = 1/2 -> 50
    s = sample(gt_sal=[[1, 0]], pred_sal=[[0.95, 0.05]], gt_parts=[[0, 1, 1]],
               pred_parts=[[0, 1, 0]], gt_semseg=[[0]], pred_semseg=[[1]])   # semseg not asked
    evaluator.process([s], None)
    res = evaluator.evaluate(1)
    assert res == pytest.approx({'parts/mIoU': 50.0, 'sal/maxIoU': 100.0, 'sal/maxF': 100.0,
                                 'delta_m': ((50 - 40) / 40 * 100 + (100 - 50) / 50 * 100) / 2})
