"""tools/test.py --tta: mmseg's multi-scale + flip testing (HST Table 5's "+MS") on the HST configs.

The resolved config is checked against the ADE20K protocol written out here (ratios 0.5-1.75, no flip
and flip, SegTTAModel around the config's model); a shrunk HST UperNet then runs the tool end to end on
a tiny ADE20K, and the TTA model's prediction is compared with the average, computed here in plain
torch, of the softmax scores of the 12 views, each flipped back and resized to the image.
"""
import json
import os.path as osp
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from tiny_ade import generate_tiny_ade
from tools_import import _load

from mmpeft_testing import ROOT

test_tool = _load('mmpeft_test_tool', 'tools/test.py')

CFG_DIR = osp.join(ROOT, 'configs', 'hst')
SEG_CONFIGS = ['upernet_vit-b_hst_160k_ade20k-512x512.py', 'fpn_vit-b_hst_80k_ade20k-512x512.py']
RATIOS = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]  # mmseg's ADE20K tta_pipeline (HST Table 5: 0.5-1.75)


@pytest.mark.parametrize('name', SEG_CONFIGS)
def test_tta_config_of_the_hst_segmentation_rows(name):
    path = osp.join(CFG_DIR, name)
    plain = test_tool.build_test_config(path, 'ckpt.pth')
    cfg = test_tool.build_test_config(path, 'ckpt.pth', tta=True)
    assert cfg.load_from == 'ckpt.pth' and cfg.resume is False
    # the model is wrapped, unchanged, in mmseg's SegTTAModel
    assert cfg.model.type == 'SegTTAModel'
    assert cfg.model.module.to_dict() == plain.model.to_dict()
    assert cfg.model.module.backbone.type == 'HSTViT'
    # the test set is read with the multi-scale + flip pipeline
    pipeline = cfg.test_dataloader.dataset.pipeline
    assert [t['type'] for t in pipeline] == ['LoadImageFromFile', 'TestTimeAug']
    scales, flips, load_ann, pack = pipeline[1]['transforms']
    assert [(t['type'], t['scale_factor'], t['keep_ratio']) for t in scales] == [('Resize', r, True) for r in RATIOS]
    assert [(t['type'], t['prob'], t['direction']) for t in flips] == [
        ('RandomFlip', 0.0, 'horizontal'), ('RandomFlip', 1.0, 'horizontal')]
    assert [t['type'] for t in load_ann] == ['LoadAnnotations'] and [t['type'] for t in pack] == ['PackSegInputs']
    # without --tta the single-scale pipeline stays
    assert plain.model.type == 'EncoderDecoder'
    assert 'TestTimeAug' not in [t['type'] for t in plain.test_dataloader.dataset.pipeline]


def test_tta_errors_name_the_config_and_the_missing_key(tmp_path):
    coco = osp.join(CFG_DIR, 'mask-rcnn_vit-b_hst_1x_coco.py')
    with pytest.raises(ValueError, match=r'config .*mask-rcnn_vit-b_hst_1x_coco\.py defines no tta_model and no '
                                         r'tta_pipeline; .*DetTTAModel'):
        test_tool.build_test_config(coco, 'ckpt.pth', tta=True)
    vtab = osp.join(CFG_DIR, 'vtab1k', 'vit-b_hst_vtab1k-dtd.py')
    with pytest.raises(ValueError, match=r'vit-b_hst_vtab1k-dtd\.py defines no tta_model'):
        test_tool.build_test_config(vtab, 'ckpt.pth', tta=True)
    # an mmdet config that defines both gets mmdet's treatment: DetTTAModel(module=model), tta_pipeline
    tta_pipeline = [dict(type='LoadImageFromFile'),
                    dict(type='TestTimeAug', transforms=[[dict(type='RandomFlip', prob=1.),
                                                          dict(type='RandomFlip', prob=0.)],
                                                         [dict(type='PackDetInputs')]])]
    path = tmp_path / 'mask_rcnn_tta.py'
    path.write_text(f"_base_ = ['{coco}']\n"
                    "tta_model = dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), "
                    "max_per_img=100))\n"
                    f'tta_pipeline = {tta_pipeline!r}\n')
    cfg = test_tool.build_test_config(str(path), 'ckpt.pth', tta=True)
    assert cfg.model.type == 'DetTTAModel' and cfg.model.tta_cfg.max_per_img == 100
    assert cfg.model.module.type == 'MaskRCNN' and cfg.model.module.backbone.type == 'HSTViT'
    assert [t['type'] for t in cfg.test_dataloader.dataset.pipeline] == ['LoadImageFromFile', 'TestTimeAug']


def _tiny_upernet(data_root: str, work_dir: str) -> Config:
    """The real HST UperNet config, shrunk: 4-layer ViT, side dims [8, 16, 16, 32], 16-channel heads."""
    cfg = Config.fromfile(osp.join(CFG_DIR, SEG_CONFIGS[0]))
    cfg.model.backbone.update(vit_kwargs=dict(depth=4, embed_dim=32, num_heads=2, img_size=64),
                              embed_dims=[8, 16, 16, 32], num_heads=[1, 1, 2, 2], init_cfg=None,
                              drop_path_rate=0.0, stem='conv_ln', stem_norm_cfg=None)
    cfg.model.decode_head.update(in_channels=[8, 16, 16, 32], channels=16)
    cfg.model.auxiliary_head.update(in_channels=16, channels=16)
    cfg.model.data_preprocessor.size = (64, 64)
    cfg.work_dir = work_dir
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].update(num_workers=0, persistent_workers=False)
        cfg[key].dataset.data_root = data_root
    return cfg


def test_tta_runs_and_averages_the_flipped_and_scaled_views(tmp_path, monkeypatch):
    from mmengine.dataset import pseudo_collate
    from mmengine.model import revert_sync_batchnorm
    from mmengine.runner import load_checkpoint
    from mmseg.registry import DATASETS, MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)

    data = generate_tiny_ade(str(tmp_path / 'ade'), num_train=1, num_val=2, size=(64, 64))
    cfg = _tiny_upernet(data, str(tmp_path / 'work'))
    cfg_path = str(tmp_path / 'tiny_upernet.py')
    cfg.dump(cfg_path)
    # an untrained model's weights as the checkpoint (random heads: predictions differ between views)
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    ckpt = str(tmp_path / 'model.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)

    out = str(tmp_path / 'test_metrics_tta.json')
    monkeypatch.setattr(sys, 'argv', ['test.py', cfg_path, ckpt, '--tta', '--work-dir', str(tmp_path / 'test'),
                                      '--out', out])
    test_tool.main()
    with open(out) as f:
        metrics = json.load(f)
    assert set(metrics) >= {'aAcc', 'mIoU', 'mAcc'} and 0.0 <= metrics['mIoU'] <= 100.0, metrics

    # the TTA model of the config the tool builds, with the checkpoint (loaded strictly into its module)
    tta_cfg = test_tool.build_test_config(cfg_path, ckpt, tta=True)
    tta = revert_sync_batchnorm(MODELS.build(tta_cfg.model))
    load_checkpoint(tta, ckpt, strict=True)
    tta.eval()
    dataset = DATASETS.build(tta_cfg.test_dataloader.dataset)
    item = dataset[0]
    views = item['data_samples']
    # 6 scales x (no flip, flip) of the 64 x 64 image
    assert [(tuple(x.shape[1:]), s.flip) for x, s in zip(item['inputs'], views)] == [
        ((round(64 * r),) * 2, flip) for r in RATIOS for flip in (False, True)]
    with torch.no_grad():
        pred = tta.test_step(pseudo_collate([item]))[0].pred_sem_seg.data[0]
        # reference: each view's logits at its own size, flipped back, resized to 64 x 64 (bilinear,
        # align_corners=False as the decode head), softmax over classes, mean over the 12 views, argmax
        module = tta.module
        scores = []
        for x, sample in zip(item['inputs'], views):
            batch = module.data_preprocessor(dict(inputs=[x], data_samples=[sample]), False)
            logits = module.encode_decode(batch['inputs'], [sample.metainfo])
            if sample.flip:
                logits = torch.flip(logits, dims=[-1])
            logits = F.interpolate(logits, size=(64, 64), mode='bilinear', align_corners=False)
            scores.append(logits.softmax(dim=1)[0])
        expected = torch.stack(scores).mean(0).argmax(0)
    assert pred.shape == (64, 64)
    assert torch.equal(pred, expected)
    # ... which is not the single-scale, unflipped prediction (view 4: ratio 1.0, no flip)
    assert not torch.equal(pred, scores[4].argmax(0))
