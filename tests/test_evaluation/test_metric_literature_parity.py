"""The three definitions MultiTaskDenseMetric shares with the PASCAL-Context literature's evaluation code
(ATRC / MTI-Net lineage), and their named alternatives, on hand-made arrays (values by hand).

1. saliency maxF: counts pooled over the dataset, thresholds 0.05 ... 0.95, pred >= t, beta^2 = 0.3
   (``sal_maxf='per_image'``: per-image precision / recall averaged, beta = 1, 0.2 ... 0.9, pred > t);
2. mIoU over all classes, a class in neither gt nor prediction scoring 0 (``miou_absent='skip'``);
3. a human-parts gt with no part pixel is not scored (``parts_background_only='score'``).
"""
import numpy as np
import pytest
import scipy.io
import torch
from mmengine.structures import PixelData

from mmpeft.datasets import read_human_parts
from mmpeft.evaluation import MultiTaskDenseMetric
from mmpeft.structures import MultiTaskDataSample


def _sample(**fields) -> MultiTaskDataSample:
    s = MultiTaskDataSample(metainfo=dict(img_path='x.jpg'))
    for key, value in fields.items():
        t = torch.as_tensor(np.asarray(value))
        setattr(s, key, PixelData(data=t if t.ndim == 3 else t[None]))
    return s


def _evaluate(samples, **kwargs) -> dict:
    metric = MultiTaskDenseMetric(single_task_baselines=kwargs.pop('single_task_baselines', None), **kwargs)
    metric.process(None, samples)
    return metric.evaluate(len(samples))


def _f(p: float, r: float, b2: float) -> float:
    return (1 + b2) * p * r / (b2 * p + r) * 100


# ---------------------------------------------------------------------------------------- 1. maxF
def test_default_maxf_grid_is_0_05_to_0_95_and_beta_sq_0_3():
    m = MultiTaskDenseMetric()
    assert m.sal_maxf == 'pooled' and m.sal_beta_sq == 0.3
    np.testing.assert_allclose(m.sal_f_thresholds, np.arange(1, 20) / 20, rtol=0, atol=1e-7)
    # maxIoU keeps its own grid (0.2 ... 0.9, pred > t)
    np.testing.assert_allclose(m.sal_iou_thresholds, np.arange(4, 19) / 20, rtol=0, atol=1e-12)


def test_pooled_maxf_reaches_0_95_and_0_05():
    # gt [1, 0], pred [0.97, 0.93]: at t = 0.95 only the salient pixel -> P = R = 1 -> 100.
    # (The old grid stopped at 0.9: both pixels, P = 1/2, R = 1, F = 1.3 * 0.5 / 1.15 = 56.5.)
    res = _evaluate([_sample(gt_sal=[[1, 0]], pred_sal=[[0.97, 0.93]])])
    assert res['sal/maxF'] == pytest.approx(100.0)
    # maxIoU (t <= 0.9): both salient at every t -> IoU 1/2
    assert res['sal/maxIoU'] == pytest.approx(50.0)
    # gt [1, 0], pred [0.07, 0.03]: at t = 0.05 only the salient pixel -> 100 (old grid from 0.2: 0)
    res = _evaluate([_sample(gt_sal=[[1, 0]], pred_sal=[[0.07, 0.03]])])
    assert res['sal/maxF'] == pytest.approx(100.0)


def test_pooled_maxf_counts_a_pixel_at_the_threshold_as_salient():
    # gt [1, 1, 0], pred [0.5, 0.5, 0.47] (0.5 is a grid value, exact in float32 and float64).
    # pred >= 0.5: tp 2, fp 0, fn 0 -> F = 100. (With pred > t the best is t = 0.45: tp 2, fp 1 ->
    # P = 2/3, R = 1, F = 1.3 * 2/3 / (0.2 + 1) = 72.2.)
    res = _evaluate([_sample(gt_sal=[[1, 1, 0]], pred_sal=np.array([[0.5, 0.5, 0.47]], np.float32))])
    assert res['sal/maxF'] == pytest.approx(100.0)
    # The grid holds the reference's float32 values: float32(0.35) = 0.3499999940 is >= its 0.35, so
    # gt [1, 0], pred float32 [0.35, 0.33] is perfect at t = 0.35 -> 100. (Against the float64 0.35 it
    # would not be salient there; the best would be t = 0.3: P = 1/2, R = 1 -> 56.5.)
    res = _evaluate([_sample(gt_sal=[[1, 0]], pred_sal=np.array([[0.35, 0.33]], np.float32))])
    assert res['sal/maxF'] == pytest.approx(100.0)


def test_pooled_maxf_pools_counts_over_images():
    # one threshold, 0.5:
    #   A: gt [1, 1, 1, 0], pred all 0.9 -> tp 3, fp 1, fn 0
    #   B: gt [1, 0],       pred [0.1, 0.9] -> tp 0, fp 1, fn 1
    #   C: gt all ignored -> nothing
    # pooled: tp 3, fp 2, fn 1 -> P = 3/5, R = 3/4
    #   b2 = 0.3: 1.3 * 0.6 * 0.75 / (0.18 + 0.75) = 0.585 / 0.93 = 62.90
    #   b2 = 1:   2 * 0.6 * 0.75 / 1.35 = 66.67
    samples = [_sample(gt_sal=[[1, 1, 1, 0]], pred_sal=[[0.9, 0.9, 0.9, 0.9]]),
               _sample(gt_sal=[[1, 0]], pred_sal=[[0.1, 0.9]]),
               _sample(gt_sal=[[255, 255]], pred_sal=[[0.9, 0.9]])]
    res = _evaluate(samples, sal_f_thresholds=[0.5])
    assert res['sal/maxF'] == pytest.approx(58.5 / 0.93)
    res = _evaluate(samples, sal_f_thresholds=[0.5], sal_beta_sq=1.0)
    assert res['sal/maxF'] == pytest.approx(200 / 3)


def test_pooled_maxf_is_0_where_precision_or_recall_is_undefined():
    # thresholds 0.5 and 0.8; gt [0, 0] (nothing salient in the whole set), pred [0.6, 0.1]
    #   t = 0.5: tp 0, fp 1 -> P = 0, R = 0/0 -> F 0;  t = 0.8: nothing predicted -> F 0
    res = _evaluate([_sample(gt_sal=[[0, 0]], pred_sal=[[0.6, 0.1]])], sal_f_thresholds=[0.5, 0.8])
    assert res['sal/maxF'] == 0.0


def test_per_image_maxf_averages_precision_and_recall_over_images():
    # same images as the pooled test, threshold 0.5:
    #   A: P = 3/4, R = 1;  B: P = 0/1 = 0, R = 0/1 = 0;  C skipped (no valid pixel)
    #   mean P = 3/8, mean R = 1/2
    #   b2 = 1 (default): 2 * 3/8 * 1/2 / (3/8 + 1/2) = 0.375 / 0.875 = 42.86
    #   b2 = 0.3:         1.3 * 3/16 / (0.1125 + 0.5) = 0.24375 / 0.6125 = 39.80
    samples = [_sample(gt_sal=[[1, 1, 1, 0]], pred_sal=[[0.9, 0.9, 0.9, 0.9]]),
               _sample(gt_sal=[[1, 0]], pred_sal=[[0.1, 0.9]]),
               _sample(gt_sal=[[255, 255]], pred_sal=[[0.9, 0.9]])]
    res = _evaluate(samples, sal_maxf='per_image', sal_f_thresholds=[0.5])
    assert res['sal/maxF'] == pytest.approx(37.5 / 0.875)
    res = _evaluate(samples, sal_maxf='per_image', sal_f_thresholds=[0.5], sal_beta_sq=0.3)
    assert res['sal/maxF'] == pytest.approx(24.375 / 0.6125)


def test_per_image_maxf_scores_an_empty_image_0():
    # threshold 0.5: A gt [1, 0] pred [0.9, 0.1]: P = R = 1; B gt [0, 0] pred [0.1, 0.1]: nothing
    # predicted, nothing salient -> P = R = 0 (the meter's 1e-12, not 1 as maxIoU gives it)
    # mean P = mean R = 1/2 -> F(b2 = 1) = 2 * 1/4 / 1 = 50. Pooled: tp 1, fp 0, fn 0 -> 100.
    samples = [_sample(gt_sal=[[1, 0]], pred_sal=[[0.9, 0.1]]),
               _sample(gt_sal=[[0, 0]], pred_sal=[[0.1, 0.1]])]
    assert _evaluate(samples, sal_maxf='per_image', sal_f_thresholds=[0.5])['sal/maxF'] == pytest.approx(50.0)
    assert _evaluate(samples, sal_f_thresholds=[0.5])['sal/maxF'] == pytest.approx(100.0)


def test_per_image_maxf_defaults_to_the_maxiou_grid_and_beta_1():
    m = MultiTaskDenseMetric(sal_maxf='per_image')
    assert m.sal_beta_sq == 1.0
    np.testing.assert_allclose(m.sal_f_thresholds, np.linspace(0.2, 0.9, 15), rtol=0, atol=0)
    # gt [1, 0], pred [0.97, 0.93]: the grid stops at 0.9, where both are salient:
    # P = 1/2, R = 1 -> F = 2 * 0.5 / 1.5 = 66.67 (pooled, reaching 0.95: 100)
    res = _evaluate([_sample(gt_sal=[[1, 0]], pred_sal=[[0.97, 0.93]])], sal_maxf='per_image')
    assert res['sal/maxF'] == pytest.approx(200 / 3)


def test_saliency_options_are_checked():
    with pytest.raises(ValueError, match=r"sal_maxf='mean'.*\('pooled', 'per_image'\)"):
        MultiTaskDenseMetric(sal_maxf='mean')
    with pytest.raises(ValueError, match=r'sal_f_thresholds must be .*ascending.*\[0\.5, 0\.3\]'):
        MultiTaskDenseMetric(sal_f_thresholds=[0.5, 0.3])
    with pytest.raises(ValueError, match=r'sal_iou_thresholds must be a non-empty'):
        MultiTaskDenseMetric(sal_iou_thresholds=[])


# ---------------------------------------------------------------------------------------- 2. mIoU
def test_miou_counts_classes_absent_from_gt_and_prediction_as_0():
    # 4 classes, only 0 and 1 appear. Confusion: gt0->0: 1, gt1->0: 1, gt1->1: 1
    # IoU0 = 1/(1+2-1) = 1/2, IoU1 = 1/(2+1-1) = 1/2, IoU2 = IoU3 = 0 -> (1/2 + 1/2) / 4 = 25
    # ('skip': over classes 0, 1 only -> 50)
    for task in ('semseg', 'parts'):
        samples = [_sample(**{f'gt_{task}': [[0, 1]], f'pred_{task}': [[0, 0]]}),
                   _sample(**{f'gt_{task}': [[1]], f'pred_{task}': [[1]]})]
        nc = {task: 4}
        assert _evaluate(samples, num_classes=nc) == pytest.approx({f'{task}/mIoU': 25.0})
        assert _evaluate(samples, num_classes=nc, miou_absent='skip') == pytest.approx({f'{task}/mIoU': 50.0})


def test_miou_class_only_predicted_is_0_in_both_modes():
    # 3 classes: gt [0, 0], pred [0, 2]. IoU0 = 1/(2+1-1) = 1/2; class 1 nowhere; class 2 only
    # predicted: IoU 0/(0+1-0) = 0.  'zero': (1/2 + 0 + 0) / 3 = 16.67;  'skip': (1/2 + 0) / 2 = 25
    samples = [_sample(gt_semseg=[[0, 0]], pred_semseg=[[0, 2]])]
    assert _evaluate(samples, num_classes=dict(semseg=3))['semseg/mIoU'] == pytest.approx(50 / 3)
    res = _evaluate(samples, num_classes=dict(semseg=3), miou_absent='skip')
    assert res['semseg/mIoU'] == pytest.approx(25.0)


def test_miou_is_nan_when_no_pixel_is_scored_and_then_left_out_of_delta_m():
    # all gt ignored: nothing to average, in either mode; delta_m has only sal left:
    # sal gt [1, 0] pred [0.9, 0.1]: maxIoU 100 vs baseline 50 -> +100 %
    samples = [_sample(gt_semseg=[[255, 255]], pred_semseg=[[0, 1]], gt_sal=[[1, 0]], pred_sal=[[0.9, 0.1]])]
    for mode in ('zero', 'skip'):
        res = _evaluate(samples, miou_absent=mode, single_task_baselines=dict(semseg=50.0, sal=50.0))
        assert np.isnan(res['semseg/mIoU'])
        assert res['delta_m'] == pytest.approx(100.0)
    with pytest.raises(ValueError, match=r"miou_absent='none'.*\('zero', 'skip'\)"):
        MultiTaskDenseMetric(miou_absent='none')


# ---------------------------------------------------------------------------------------- 3. parts
def test_parts_map_without_any_part_is_not_scored():
    # 3 part classes.
    #   P (parts annotated): gt [0, 1, 2], pred [0, 1, 1]
    #   Q (a person without part masks: all background): gt [0, 0, 0, 0], pred [1, 1, 2, 0]
    # default: Q ignored -> confusion of P: IoU0 1, IoU1 1/(1+2-1) = 1/2, IoU2 0 -> 50
    # 'score': Q adds gt0->1: 2, gt0->2: 1, gt0->0: 1. Confusion rows (gt) x cols (pred):
    #   0: [2, 2, 1]  1: [0, 1, 0]  2: [0, 1, 0];  row sums [5, 1, 1], column sums [2, 4, 1]
    #   IoU0 = 2/(5+2-2) = 2/5, IoU1 = 1/(1+4-1) = 1/4, IoU2 = 0/(1+1) = 0 -> 0.65 / 3 = 21.67
    p = _sample(gt_parts=[[0, 1, 2]], pred_parts=[[0, 1, 1]])
    q = _sample(gt_parts=[[0, 0, 0, 0]], pred_parts=[[1, 1, 2, 0]])
    nc = dict(parts=3)
    assert _evaluate([p, q], num_classes=nc) == pytest.approx({'parts/mIoU': 50.0})
    assert _evaluate([p, q], num_classes=nc, parts_background_only='score') == pytest.approx(
        {'parts/mIoU': 65 / 3})


def test_parts_background_and_ignore_only_map_is_not_scored_but_one_part_pixel_is():
    # R: gt [0, 255, 0] (background and ignore only, as the reference's check 'all 0 or 255'),
    #    pred [1, 1, 1] -> not scored. With P of the test above alone: 50.
    # S: gt [0, 255, 2], pred [1, 1, 2] -> scored: adds gt0->1: 1, gt2->2: 1.
    #   P + S rows: 0: [1, 1, 0]  1: [0, 1, 0]  2: [0, 1, 1]; rows [2, 1, 2], columns [1, 3, 1]
    #   IoU0 = 1/(2+1-1) = 1/2, IoU1 = 1/(1+3-1) = 1/3, IoU2 = 1/(2+1-1) = 1/2 -> (4/3) / 3 = 44.44
    p = _sample(gt_parts=[[0, 1, 2]], pred_parts=[[0, 1, 1]])
    r = _sample(gt_parts=[[0, 255, 0]], pred_parts=[[1, 1, 1]])
    s = _sample(gt_parts=[[0, 255, 2]], pred_parts=[[1, 1, 2]])
    nc = dict(parts=3)
    assert _evaluate([p, r], num_classes=nc) == pytest.approx({'parts/mIoU': 50.0})
    assert _evaluate([p, s], num_classes=nc) == pytest.approx({'parts/mIoU': 400 / 9})


def test_only_background_parts_everywhere_gives_nan_and_semseg_is_not_affected():
    # every parts map is background only -> nothing scored -> NaN. An all-background semseg map is
    # scored: gt [0, 0] pred [0, 1], 2 classes: IoU0 = 1/2, IoU1 = 0/1 = 0 -> 25
    res = _evaluate([_sample(gt_parts=[[0, 0]], pred_parts=[[1, 1]], gt_semseg=[[0, 0]], pred_semseg=[[0, 1]])],
                    num_classes=dict(semseg=2, parts=2))
    assert np.isnan(res['parts/mIoU'])
    assert res['semseg/mIoU'] == pytest.approx(25.0)
    with pytest.raises(ValueError, match=r"parts_background_only='drop'.*\('ignore', 'score'\)"):
        MultiTaskDenseMetric(parts_background_only='drop')


def _struct(fields, rows):
    arr = np.zeros((1, len(rows)), dtype=[(f, 'O') for f in fields])
    for j, row in enumerate(rows):
        for f, v in zip(fields, row):
            arr[0, j][f] = v
    return arr


def test_person_without_part_masks_read_by_the_pipeline_is_not_scored(tmp_path):
    # The loader reads a person image whose only person has no part masks as an all-0 map (a
    # person-less image gets all 255 without reading a file); the metric must skip it.
    shape = (2, 3)
    person = np.zeros(shape, np.uint8)
    person[0, :2] = 1
    anno = np.zeros((1, 1), dtype=[('imname', 'O'), ('objects', 'O')])
    anno[0, 0]['imname'] = 'x'
    anno[0, 0]['objects'] = _struct(('class', 'class_ind', 'mask', 'parts'),
                                    [('person', np.array([[15]], np.uint8), person, np.zeros((0, 0)))])
    scipy.io.savemat(tmp_path / 'a.mat', {'anno': anno})
    gt = read_human_parts(str(tmp_path / 'a.mat'), shape)
    np.testing.assert_array_equal(gt, np.zeros(shape, np.uint8))
    # with an annotated image (2 classes): gt [0, 1] pred [0, 1] -> IoU0 = IoU1 = 1 -> 100; the
    # partless image predicted all class 1 would add 6 false positives of class 1 if scored:
    # rows 0: [1, 6], 1: [0, 1] -> IoU0 = 1/7, IoU1 = 1/7 -> 14.29
    annotated = _sample(gt_parts=[[0, 1]], pred_parts=[[0, 1]])
    partless = _sample(gt_parts=gt, pred_parts=np.ones(shape, np.int64))
    assert _evaluate([annotated, partless], num_classes=dict(parts=2)) == pytest.approx({'parts/mIoU': 100.0})
    assert _evaluate([annotated, partless], num_classes=dict(parts=2), parts_background_only='score') == \
        pytest.approx({'parts/mIoU': 100 / 7})


# ------------------------------------------------------------------ against the reference meters
def test_matches_plain_torch_reference_meters_on_a_random_set():
    """The literature's meters re-written in a few lines of plain torch / numpy, on random data.

    Saliency predictions include float32 values exactly on the maxF grid (where ``>=`` and the grid's
    float32 values decide) and on the maxIoU grid.
    """
    g = torch.Generator().manual_seed(0)
    grid32 = torch.arange(0.05, 1, 0.05)                     # the reference's maxF grid (float32)
    iou_grid = np.linspace(0.2, 0.9, 15)
    on_grid = torch.cat([grid32, torch.from_numpy(iou_grid).float()])
    samples, sal, seg, parts = [], [], [], []
    for i, (h, w) in enumerate([(7, 9), (5, 4), (8, 8), (3, 11), (6, 6), (4, 5)]):
        gt_sal = (torch.rand(h, w, generator=g) < 0.4).long()
        gt_sal[torch.rand(h, w, generator=g) < 0.1] = 255
        pred_sal = torch.rand(h, w, generator=g)
        pick = torch.rand(h, w, generator=g) < 0.5
        pred_sal[pick] = on_grid[torch.randint(len(on_grid), (int(pick.sum()),), generator=g)]
        gt_seg = torch.randint(0, 4, (h, w), generator=g)    # classes 4, 5 of 6 never occur
        gt_seg[torch.rand(h, w, generator=g) < 0.1] = 255
        pred_seg = torch.randint(0, 4, (h, w), generator=g)
        if i % 3 == 0:                                       # a person without part masks
            gt_parts = torch.zeros(h, w, dtype=torch.long)
        elif i % 3 == 1:                                     # no person
            gt_parts = torch.full((h, w), 255)
        else:
            gt_parts = torch.randint(0, 3, (h, w), generator=g)  # parts 3 .. 6 never occur
        pred_parts = torch.randint(0, 4, (h, w), generator=g)
        sal.append((pred_sal, gt_sal))
        seg.append((pred_seg, gt_seg))
        parts.append((pred_parts, gt_parts))
        samples.append(_sample(pred_sal=pred_sal[None], gt_sal=gt_sal[None], pred_semseg=pred_seg[None],
                               gt_semseg=gt_seg[None], pred_parts=pred_parts[None], gt_parts=gt_parts[None]))

    # ATRC saliency meter: counts pooled per threshold, pred >= t, beta^2 = 0.3, NaN F -> 0
    tp, pp, ap = (torch.zeros(len(grid32)) for _ in range(3))
    for pred, gt in sal:
        valid = gt != 255
        for k, t in enumerate(grid32):
            positive, salient = (pred >= t)[valid].float(), gt[valid].float()
            tp[k] += (positive * salient).sum()
            pp[k] += positive.sum()
            ap[k] += salient.sum()
    prec, rec = tp / pp, tp / ap
    f = 1.3 * prec * rec / (0.3 * prec + rec)
    f[f != f] = 0
    ref_pooled = float(f.max()) * 100

    # Multi-Task-Learning-PyTorch saliency meter: per image, pred > t, P / R averaged, beta = 1;
    # its per-image IoU (1 when both empty) is maxIoU
    ious, ps, rs = [], [], []
    for pred, gt in sal:
        valid = (gt != 255).numpy()
        p_np, g_np = pred.numpy()[valid], gt.numpy()[valid] == 1
        row_iou, row_p, row_r = [], [], []
        for t in iou_grid:
            m = p_np > t
            a, b, c = (m & g_np).sum(), (m & ~g_np).sum(), (~m & g_np).sum()
            row_iou.append(1.0 if not m.any() and not g_np.any() else a / (a + b + c))
            row_p.append(a / (a + b + 1e-12))
            row_r.append(a / (a + c + 1e-12))
        ious.append(row_iou)
        ps.append(row_p)
        rs.append(row_r)
    mp, mr = np.mean(ps, 0), np.mean(rs, 0)
    ref_per_image = float(np.max(2 * mp * mr / (mp + mr + 1e-12))) * 100
    ref_max_iou = float(np.max(np.mean(ious, 0))) * 100

    # reference mIoU: all classes, IoU = tp / max(tp + fp + fn, 1e-8); a parts map of only 0 and 255
    # becomes all ignore first
    def ref_miou(pairs, n):
        tp_, fp_, fn_ = np.zeros(n), np.zeros(n), np.zeros(n)
        for pred, gt in pairs:
            if n == 7 and bool(((gt == 0) | (gt == 255)).all()):
                gt = torch.full_like(gt, 255)
            valid = gt != 255
            for c in range(n):
                tp_[c] += int(((gt == c) & (pred == c) & valid).sum())
                fp_[c] += int(((gt != c) & (pred == c) & valid).sum())
                fn_[c] += int(((gt == c) & (pred != c) & valid).sum())
        return float(np.mean(tp_ / np.maximum(tp_ + fp_ + fn_, 1e-8))) * 100

    res = _evaluate(samples, num_classes=dict(semseg=6, parts=7))
    assert res['sal/maxF'] == pytest.approx(ref_pooled, rel=1e-5)
    assert res['sal/maxIoU'] == pytest.approx(ref_max_iou, rel=1e-9)
    assert res['semseg/mIoU'] == pytest.approx(ref_miou(seg, 6), rel=1e-9)
    assert res['parts/mIoU'] == pytest.approx(ref_miou(parts, 7), rel=1e-9)
    res = _evaluate(samples, num_classes=dict(semseg=6, parts=7), sal_maxf='per_image')
    assert res['sal/maxF'] == pytest.approx(ref_per_image, rel=1e-9)
