"""tools/analysis_tools/paper_table.py on fake work dirs: our numbers, group means and differences in the
right cells, the paper's numbers in the right rows (spot-checked against the papers' text), '-' for
what is missing."""
import json
import os
import os.path as osp

import pytest
from tools_import import _load

pt = _load('mmpeft_paper_table', 'tools/analysis_tools/paper_table.py')
TABLES = pt.load_tables()

# VTAB-1k task order of the HST paper's Table 2 and the config names' task slugs
VTAB = [('cifar', 'cifar100'), ('caltech101', 'caltech101'), ('dtd', 'dtd'),
        ('oxford_flowers102', 'oxford-flowers102'), ('oxford_iiit_pet', 'oxford-iiit-pet'), ('svhn', 'svhn'),
        ('sun397', 'sun397'), ('patch_camelyon', 'patch-camelyon'), ('eurosat', 'eurosat'),
        ('resisc45', 'resisc45'), ('diabetic_retinopathy', 'diabetic-retinopathy'), ('clevr_count', 'clevr-count'),
        ('clevr_dist', 'clevr-dist'), ('dmlab', 'dmlab'), ('kitti', 'kitti'), ('dsprites_loc', 'dsprites-loc'),
        ('dsprites_ori', 'dsprites-ori'), ('smallnorb_azi', 'smallnorb-azi'), ('smallnorb_ele', 'smallnorb-ele')]


def _write(root, name: str, metrics: dict, file: str = 'test_metrics.json') -> None:
    os.makedirs(osp.join(root, name), exist_ok=True)
    with open(osp.join(root, name, file), 'w') as f:
        json.dump(metrics, f)


def _rows(result: dict) -> dict:
    """``{(setting label, row kind): {column: value}}``; the setting label is carried to its 3 rows."""
    out, label = {}, None
    for row in result['rows']:
        label = row[0] or label
        out[(label, row[1])] = dict(zip(result['header'][2:], row[2:]))
    return out


def test_vtab_group_means_overall_mean_and_differences(tmp_path):
    root = str(tmp_path)
    # task i (paper order) scores 50 + i, as tools/test.py writes it (mmpretrain's Accuracy, in %)
    for i, (_, slug) in enumerate(VTAB):
        _write(root, f'vit-b_hst_vtab1k-{slug}', {'accuracy/top1': 50.0 + i})
    rows = _rows(pt.build_rows(TABLES, 'hst-vtab', root))
    (label, _), = [k for k in rows if k[1] == 'paper']
    assert label.startswith('VTAB-1k') and 'HST-B (ours)' in label and '0.78M' in label
    paper, ours, diff = rows[(label, 'paper')], rows[(label, 'ours')], rows[(label, 'ours - paper')]
    # by hand: natural tasks 0-6 -> 50..56, mean 53; specialized 7-10 -> 57..60, mean 58.5;
    # structured 11-18 -> 61..68, mean 64.5; all 19 -> 50..68, mean 59
    assert ours['Natural mean'] == pytest.approx(53.0)
    assert ours['Specialized mean'] == pytest.approx(58.5)
    assert ours['Structured mean'] == pytest.approx(64.5)
    assert ours['Mean (19 tasks)'] == pytest.approx(59.0)
    assert ours['CIFAR-100'] == 50.0 and ours['SmallNORB/ele'] == 68.0
    # the paper's HST-B row (Table 2): CIFAR-100 76.7, DTD 75.2, SmallNORB/ele 52.1, Average 76.12;
    # its Natural mean by hand: (76.7 + 95.1 + 75.2 + 99.6 + 91.1 + 91.2 + 52.3) / 7 = 83.0286
    assert paper['CIFAR-100'] == 76.7 and paper['DTD'] == 75.2 and paper['SmallNORB/ele'] == 52.1
    assert paper['Mean (19 tasks)'] == 76.12
    assert paper['Natural mean'] == pytest.approx(581.2 / 7)
    assert diff['DTD'] == pytest.approx(52.0 - 75.2) and diff['Mean (19 tasks)'] == pytest.approx(59.0 - 76.12)


def test_vtab_missing_task_prints_dash_and_no_partial_mean(tmp_path, capsys):
    root = str(tmp_path)
    for _, slug in VTAB[1:]:  # CIFAR-100 not run yet
        _write(root, f'vit-b_hst-s_vtab1k-{slug}', {'accuracy/top1': 60.0})
    rows = _rows(pt.build_rows(TABLES, 'hst-vtab', root, method='hst-s'))
    label = next(k[0] for k in rows if k[1] == 'paper')
    ours = rows[(label, 'ours')]
    assert ours['CIFAR-100'] is None and ours['Natural mean'] is None and ours['Mean (19 tasks)'] is None
    assert ours['Specialized mean'] == pytest.approx(60.0)
    # HST-S (Table 2): Sun397 47.2, KITTI/distance 83.2, Average 74.75
    paper = rows[(label, 'paper')]
    assert (paper['Sun397'], paper['KITTI/distance'], paper['Mean (19 tasks)']) == (47.2, 83.2, 74.75)
    pt.main(['hst-vtab', root, '--method', 'hst-s'])
    out = capsys.readouterr().out
    assert '| VTAB-1k (ViT-B/16, ImageNet-21k): HST-S (ours) (0.28M) | paper | 76.20 | 94.80 |' in out
    assert '|  | ours | - | 60.00 |' in out
    assert 'Table 2' in out


def test_fgvc_coco_ade20k_cells(tmp_path):
    root = str(tmp_path)
    _write(root, 'vit-b-mae_hst_stanford-cars', {'accuracy/top1': 80.5})
    rows = _rows(pt.build_rows(TABLES, 'hst-fgvc', root))
    mae = next(k[0] for k in rows if k[1] == 'paper' and k[0].startswith('MAE'))
    # Table 3, HST, MAE column: Stanford Cars 83.7, CIFAR-100 79.7 (in21k: 88.2 / 93.6)
    assert rows[(mae, 'paper')]['Stanford Cars'] == 83.7 and rows[(mae, 'paper')]['Cifar-100'] == 79.7
    assert rows[(mae, 'ours')]['Stanford Cars'] == 80.5
    assert rows[(mae, 'ours - paper')]['Stanford Cars'] == pytest.approx(80.5 - 83.7)
    assert rows[(mae, 'ours')]['Cifar-100'] is None
    in21k = next(k[0] for k in rows if k[1] == 'paper' and k[0].startswith('ImageNet-21k'))
    assert rows[(in21k, 'paper')]['Stanford Cars'] == 88.2 and rows[(in21k, 'ours')]['Stanford Cars'] is None

    # mmdet's CocoMetric writes fractions: 0.412 -> 41.2
    _write(root, 'cascade-mask-rcnn_vit-b_hst_3x-ms_coco', {'coco/bbox_mAP': 0.412, 'coco/segm_mAP': 0.395})
    rows = _rows(pt.build_rows(TABLES, 'hst-coco', root))
    cascade = next(k[0] for k in rows if k[0].startswith('Cascade'))
    # Table 4, HST, Cascade Mask R-CNN 3x+MS: AP^b 49.5, AP^m 43.0, 68.4M
    assert rows[(cascade, 'paper')]['AP^b'] == 49.5 and rows[(cascade, 'paper')]['AP^m'] == 43.0
    assert '68.4M' in cascade
    assert rows[(cascade, 'ours')]['AP^b'] == pytest.approx(41.2)
    assert rows[(cascade, 'ours - paper')]['AP^m'] == pytest.approx(39.5 - 43.0)
    atss = next(k[0] for k in rows if k[0].startswith('ATSS'))
    assert rows[(atss, 'paper')]['AP^b'] == 46.0 and rows[(atss, 'paper')]['AP^m'] is None  # no masks
    vit_l = next(k[0] for k in rows if 'ViT-L' in k[0])
    assert rows[(vit_l, 'paper')]['AP^b'] == 45.5 and '39.62M' in vit_l

    _write(root, 'upernet_vit-b_hst_160k_ade20k-512x512', {'mIoU': 46.1, 'aAcc': 80.0})
    _write(root, 'upernet_vit-b_hst_160k_ade20k-512x512', {'mIoU': 46.9}, file='test_metrics_tta.json')
    rows = _rows(pt.build_rows(TABLES, 'hst-ade20k', root))
    uper = next(k[0] for k in rows if k[0].startswith('UperNet'))
    fpn = next(k[0] for k in rows if k[0].startswith('Semantic FPN'))
    # Table 5, HST: UperNet 47.0 / +MS 47.5; Semantic FPN 44.3 / 45.0
    assert (rows[(uper, 'paper')]['mIoU'], rows[(uper, 'paper')]['+MS']) == (47.0, 47.5)
    assert (rows[(fpn, 'paper')]['mIoU'], rows[(fpn, 'paper')]['+MS']) == (44.3, 45.0)
    assert (rows[(uper, 'ours')]['mIoU'], rows[(uper, 'ours')]['+MS']) == (46.1, 46.9)
    assert rows[(uper, 'ours - paper')]['+MS'] == pytest.approx(46.9 - 47.5)
    assert rows[(fpn, 'ours')] == {'mIoU': None, '+MS': None}
    # a baseline row: its work dir follows configs/baselines' names
    _write(root, 'lora_upernet_vit-b_160k_ade20k-512x512', {'mIoU': 44.0})
    rows = _rows(pt.build_rows(TABLES, 'hst-ade20k', root, method='lora'))
    uper = next(k[0] for k in rows if k[0].startswith('UperNet'))
    assert rows[(uper, 'paper')]['mIoU'] == 44.9 and rows[(uper, 'ours')]['mIoU'] == 44.0


def test_polyhistor_delta_m_against_the_single_task_row(tmp_path):
    root = str(tmp_path)
    _write(root, 'polyhistor-lite_swin-t_pascal-context-mt-512x512',
           {'semseg/mIoU': 70.0, 'parts/mIoU': 60.0, 'sal/maxIoU': 64.0, 'normals/mean': 18.0, 'sal/maxF': 80.0})
    rows = _rows(pt.build_rows(TABLES, 'polyhistor-pascal', root, method='polyhistor-lite'))
    label = next(k[0] for k in rows)
    paper, ours = rows[(label, 'paper')], rows[(label, 'ours')]
    # Polyhistor Table 1, Polyhistor-Lite: 70.24 / 59.12 / 64.75 / 17.40, delta_up 1.74%, 0.41M encoder
    assert [paper[k] for k in ('Seg. ↑', 'H.Part ↑', 'Sal. ↑', 'Normals ↓', 'Δup (%)')] == [
        70.24, 59.12, 64.75, 17.40, 1.74]
    assert '0.41M' in label
    # by hand, against single-task full fine-tuning 67.21 / 61.93 / 62.35 / 17.97:
    # (70 - 67.21) / 67.21 = 4.1512%, (60 - 61.93) / 61.93 = -3.1164%, (64 - 62.35) / 62.35 = 2.6464%,
    # -(18 - 17.97) / 17.97 = -0.1669%; mean 0.8786%
    assert ours['Δup (%)'] == pytest.approx((4.1512 - 3.1164 + 2.6464 - 0.1669) / 4, abs=1e-3)
    assert ours['Seg. ↑'] == 70.0 and ours['Normals ↓'] == 18.0
    # single-task full fine-tuning: one work dir per task
    _write(root, 'st-full-ft-parts_swin-t_pascal-context-mt-512x512', {'parts/mIoU': 61.0})
    rows = _rows(pt.build_rows(TABLES, 'polyhistor-pascal', root, method='st-full-ft'))
    label = next(k[0] for k in rows)
    assert rows[(label, 'ours')]['H.Part ↑'] == 61.0 and rows[(label, 'ours')]['Seg. ↑'] is None
    assert rows[(label, 'paper')]['Δup (%)'] == 0.0


def test_errors_name_the_bad_value(tmp_path):
    with pytest.raises(ValueError, match=r"hst-ade20k has no method 'noah'; its methods: full, linear"):
        pt.build_rows(TABLES, 'hst-ade20k', str(tmp_path), method='noah')
    with pytest.raises(ValueError, match=r"unknown table 'hst-table9'"):
        pt.build_rows(TABLES, 'hst-table9', str(tmp_path))
    os.makedirs(tmp_path / 'fpn_vit-b_hst_80k_ade20k-512x512')
    (tmp_path / 'fpn_vit-b_hst_80k_ade20k-512x512' / 'test_metrics.json').write_text('{"mIoU": 4')
    with pytest.raises(ValueError, match=r'fpn_vit-b_hst_80k_ade20k-512x512/test_metrics.json is not JSON'):
        pt.build_rows(TABLES, 'hst-ade20k', str(tmp_path))
