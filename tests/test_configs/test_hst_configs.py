"""Every HST config (and its comparison rows) resolves, builds and takes a training and an inference step.

Each config is read with ``Config.fromfile`` (so ``_base_ = 'mmdet::...'`` etc. must resolve), then
shrunk through the same classes: a 4-layer, width-32 ViT, side-network dims ``[8, 16, 16, 32]``,
necks / heads with 32-64 channels, no pretrained file, 64-96 pixel images. The checks: the loss is
finite and backward gives gradients on exactly the trainable parameters (in the backbone: the HST set,
or the pyramid modules for linear probing, or everything for full fine-tuning), and the inference step
returns the toolbox's predictions with the right shapes.
"""
import copy
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmpeft  # noqa: F401
from mmpeft.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG_DIR = osp.join(ROOT, 'configs', 'hst')

DET = ['mask-rcnn_vit-b_hst_1x_coco.py', 'mask-rcnn_vit-b_hst_3x-ms_coco.py',
       'mask-rcnn_vit-l_hst_1x_coco.py', 'cascade-mask-rcnn_vit-b_hst_3x-ms_coco.py',
       'atss_vit-b_hst_3x-ms_coco.py', 'mask-rcnn_vit-b_linear-probe_1x_coco.py',
       'mask-rcnn_vit-b_full-ft_1x_coco.py']
SEG = ['fpn_vit-b_hst_80k_ade20k-512x512.py', 'upernet_vit-b_hst_160k_ade20k-512x512.py',
       'upernet_vit-b_linear-probe_160k_ade20k-512x512.py', 'upernet_vit-b_full-ft_160k_ade20k-512x512.py']
CLS = ['vtab1k/vit-b_hst_vtab1k-cifar100.py', 'vtab1k/vit-b_hst_vtab1k-dsprites-loc.py',
       'fgvc/vit-b-in21k_hst_cub200.py']

TINY_VIT = dict(depth=4, embed_dim=32, num_heads=2, img_size=64)
TINY_DIMS = [8, 16, 16, 32]
CHANNEL_KEYS = ('in_channels', 'out_channels', 'feat_channels', 'channels', 'fc_out_channels',
                'conv_out_channels')
SMALL = {128: 16, 256: 64, 512: 32, 1024: 64}  # 64: ATSS's GroupNorm has 32 groups


def _shrink_channels(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in CHANNEL_KEYS and isinstance(v, int) and v in SMALL:
                node[k] = SMALL[v]
            elif k in CHANNEL_KEYS and isinstance(v, (list, tuple)) and all(x in SMALL for x in v):
                node[k] = [SMALL[x] for x in v]
            else:
                _shrink_channels(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            _shrink_channels(v)


def _shrink_counts(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ('nms_pre', 'max_per_img') and isinstance(v, int) and v >= 1000:
                node[k] = 100
            elif k == 'num' and isinstance(v, int) and v >= 256:
                node[k] = 64
            else:
                _shrink_counts(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            _shrink_counts(v)


def load_tiny(name: str):
    """The config and its model dict, shrunk (the same classes, fewer layers / channels)."""
    cfg = Config.fromfile(osp.join(CFG_DIR, name))
    assert cfg.custom_imports['imports'][0] == 'mmpeft' and not cfg.custom_imports['allow_failed_imports']
    model = copy.deepcopy(cfg.model)  # a ConfigDict: the toolboxes read train_cfg.rpn etc.
    if cfg.get('data_preprocessor') and 'data_preprocessor' not in model:
        model['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)  # what the Runner does
    bb = model['backbone']
    bb.update(vit_kwargs=TINY_VIT, init_cfg=None)
    if bb['type'] == 'HSTViT':
        bb.update(embed_dims=TINY_DIMS, num_heads=[1, 1, 2, 2])
        dims = TINY_DIMS
    else:
        dims = [TINY_VIT['embed_dim']] * 4
    # the module reading the backbone: the neck if there is one, else the decode head
    first = 'neck' if model.get('neck') else 'decode_head' if model.get('decode_head') else None
    if first is not None:
        model[first]['in_channels'] = dims
    if 'auxiliary_head' in model:
        model['auxiliary_head']['in_channels'] = dims[model['auxiliary_head']['in_index']]
    if model.get('head', {}).get('type') == 'LinearClsHead':
        model['head']['in_channels'] = dims[-1]
    for key in [k for k in model if k not in ('backbone', 'data_preprocessor')]:
        _shrink_channels(model[key])
    # fewer proposals / sampled RoIs: the same code paths at a fraction of the CPU time
    for key in ('train_cfg', 'test_cfg'):
        _shrink_counts(model.get(key))
    if model['type'] == 'EncoderDecoder':
        model['data_preprocessor']['size'] = (64, 64)
    return cfg, model


def build(cfg, model_cfg):
    from mmengine.model import revert_sync_batchnorm
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        torch.manual_seed(0)
        model = MODELS.build(model_cfg)
    return revert_sync_batchnorm(model)  # what the Runner does when not distributed


def expected_backbone_trainable(backbone) -> set:
    names = [n for n, _ in backbone.named_parameters()]
    if type(backbone).__name__ == 'HSTViT':
        return {n for n in names if n.startswith(('side_network.', 'bridge.')) or n == 'meta_tokens'
                or re.fullmatch(r'vit\.blocks\.\d+\.norm[12]\.(weight|bias)', n)}
    if backbone.finetune == 'linear_probe':
        return {n for n in names if n.startswith(('fpn1.', 'fpn2.'))}
    return set(names)


def check_gradients(model):
    bb_trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert bb_trainable == expected_backbone_trainable(model.backbone)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f'{n} is trainable but got no gradient'
        else:
            assert p.grad is None, f'{n} is frozen but got a gradient'
    # the toolbox's neck / heads train normally
    assert any(p.requires_grad for n, p in model.named_parameters() if not n.startswith('backbone.'))


def det_batch(batch_size: int, h: int = 96, w: int = 64, with_mask: bool = True):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for i in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
                                        img_id=i))
        boxes = torch.tensor([[8.0, 10.0, 40.0, 60.0], [20.0, 30.0, 60.0, 90.0]])
        gt = InstanceData(bboxes=boxes, labels=torch.tensor([3, 7]))
        if with_mask:
            masks = np.zeros((2, h, w), dtype=np.uint8)
            for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
                masks[k, y1:y2, x1:x2] = 1
            gt.masks = BitmapMasks(masks, h, w)
        s.gt_instances = gt
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def seg_batch(batch_size: int, h: int = 64, w: int = 64):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, h, w), generator=g))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def cls_batch(batch_size: int, num_classes: int, size: int = 64):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
              for _ in range(batch_size)]
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(batch_size)]
    return dict(inputs=inputs, data_samples=samples)


def check_optimizer_and_hooks(cfg, model):
    """The config's optimizer holds exactly the trainable parameters, and its TrainableParamsHook
    (patterns of what must train / stay frozen) passes on the model."""
    from types import SimpleNamespace

    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper

    from mmpeft.hooks import TrainableParamsHook
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    if optim_cfg.get('type') == 'AmpOptimWrapper':  # the classification recipes' AMP needs a GPU
        optim_cfg.type = 'OptimWrapper'
        optim_cfg.pop('loss_scale', None)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        optim = build_optim_wrapper(model, optim_cfg)
    held = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}
    hooks = [h for h in cfg.get('custom_hooks', []) if h['type'] == 'TrainableParamsHook']
    assert len(hooks) == 1
    args = {k: v for k, v in hooks[0].items() if k != 'type'}
    runner = SimpleNamespace(model=model, optim_wrapper=optim, logger=MMLogger.get_current_instance())
    TrainableParamsHook(**args).before_train(runner)


def train_and_predict(model, data):
    model.train()
    batch = model.data_preprocessor(copy.deepcopy(data), training=True)
    losses = model(**batch, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    check_gradients(model)
    model.eval()
    with torch.no_grad():
        batch = model.data_preprocessor(copy.deepcopy(data), training=False)
        return model(**batch, mode='predict')


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize('name', DET)
def test_detection_config_trains_and_predicts(name):
    cfg, model_cfg = load_tiny(name)
    model = build(cfg, model_cfg)
    check_optimizer_and_hooks(cfg, model)
    if 'hst' in name:
        assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                                                   weight_decay=0.05)  # appendix B.2.2
        assert cfg.model.neck.in_channels == [64, 128, 256, 384]
    with_mask = 'mask' in name
    preds = train_and_predict(model, det_batch(1, with_mask=with_mask))  # batch size 1
    assert len(preds) == 1
    inst = preds[0].pred_instances
    assert inst.bboxes.shape[-1] == 4 and inst.scores.shape == inst.labels.shape
    assert len(inst.bboxes) <= cfg.model.test_cfg.get('rcnn', cfg.model.test_cfg).get('max_per_img', 100)
    if with_mask:
        assert tuple(inst.masks.shape[-2:]) == (96, 64)


@pytest.mark.parametrize('name', SEG)
def test_segmentation_config_trains_and_predicts(name):
    cfg, model_cfg = load_tiny(name)
    assert cfg.model.pretrained is None  # the base's ResNet weights must not reach the ViT
    model = build(cfg, model_cfg)
    check_optimizer_and_hooks(cfg, model)
    # UperNet's pooling-pyramid module has BatchNorm on 1x1 maps: batch 2 (a toolbox constraint)
    n = 2 if 'upernet' in name else 1
    preds = train_and_predict(model, seg_batch(n))
    assert len(preds) == n and preds[0].pred_sem_seg.data.shape == (1, 64, 64)
    assert preds[0].seg_logits.data.shape == (150, 64, 64)


@pytest.mark.parametrize('name', CLS)
def test_classification_config_trains_and_predicts(name):
    cfg, model_cfg = load_tiny(name)
    assert cfg.model.backbone.out_type == 'pooled' and cfg.model.backbone.embed_dims == [32, 48, 64, 72]
    assert cfg.model.head.in_channels == 72
    num_classes = cfg.model.head.num_classes
    assert cfg.data_preprocessor.num_classes == num_classes
    model = build(cfg, model_cfg)
    check_optimizer_and_hooks(cfg, model)
    # two images: the pooled BatchNorm1d (released fc_norm) normalises with batch statistics in training
    preds = train_and_predict(model, cls_batch(2, num_classes))
    assert preds[0].pred_score.shape == (num_classes,)
    torch.testing.assert_close(preds[0].pred_score.sum(), torch.tensor(1.0))


def test_configs_load_the_checkpoint_users_have():
    for name in DET + SEG + CLS:
        cfg = Config.fromfile(osp.join(CFG_DIR, name))
        ckpt = cfg.model.backbone.init_cfg.checkpoint
        assert cfg.model.backbone.init_cfg.type == 'Pretrained'
        assert ckpt.startswith('pretrain/jx_vit_') and ckpt.endswith('_in21k.pth'), name
        assert ('large' in ckpt) == ('vit-l' in name), name


def test_vtab1k_config_reads_the_release_layout(tmp_path):
    """VTAB1kDataset reads <root>/<task>/{train800val200,test}.txt through the config's pipeline."""
    import cv2
    from mmpretrain.registry import DATASETS
    root = tmp_path / 'vtab-1k'
    task_dir = root / 'dsprites_loc'
    (task_dir / 'images' / 'a b').mkdir(parents=True)
    lines = []
    for i in range(5):
        rel = f'images/a b/{i:06d}.jpg'  # a space in the path: the label is the last field
        cv2.imwrite(str(task_dir / rel), np.full((40, 30, 3), i * 40, np.uint8))
        lines.append(f'{rel} {i * 3}')
    (task_dir / 'train800val200.txt').write_text('\n'.join(lines) + '\n')
    (task_dir / 'test.txt').write_text(lines[0] + '\n')
    cfg = Config.fromfile(osp.join(CFG_DIR, 'vtab1k/vit-b_hst_vtab1k-dsprites-loc.py'))
    ds_cfg = cfg.train_dataloader.dataset.to_dict()
    ds_cfg['data_root'] = str(root)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        ds = DATASETS.build(ds_cfg)
        test_cfg = dict(cfg.val_dataloader.dataset.to_dict(), data_root=str(root))
        test = DATASETS.build(test_cfg)
    assert len(ds) == 5 and len(test) == 1 and ds.num_classes == 16
    assert [ds.get_data_info(i)['gt_label'] for i in range(5)] == [0, 3, 6, 9, 12]
    item = ds[2]
    assert item['inputs'].shape == (3, 224, 224)  # resized to 224 x 224 (appendix B.2.1)
    assert int(item['data_samples'].gt_label) == 6
    # bad lines are errors naming the file and line
    (task_dir / 'test.txt').write_text(lines[0] + '\nimages/x.jpg 99\n')
    with pytest.raises(ValueError, match=r'test\.txt:2: label 99 outside 0\.\.15'):
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            DATASETS.build(test_cfg)
    with pytest.raises(ValueError, match="unknown task 'cifar10'"):
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            DATASETS.build(dict(type='VTAB1kDataset', data_root=str(root), task='cifar10'))


@pytest.mark.parametrize('name', ['mask-rcnn_vit-b_hst_1x_coco.py',
                                  'upernet_vit-b_linear-probe_160k_ade20k-512x512.py'])
def test_model_init_weights_loads_the_vit_checkpoint(name, tmp_path):
    """What the Runner does before training: ``model.init_weights()`` reaches the backbone, which
    loads the ViT strictly (here an in21k-style file with pre_logits / head) and keeps the trainable set."""
    import timm
    cfg, model_cfg = load_tiny(name)
    torch.manual_seed(3)
    src = timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=21843,
                            **TINY_VIT).state_dict()
    src['pre_logits.fc.weight'] = torch.randn(32, 32)
    src['pre_logits.fc.bias'] = torch.randn(32)
    path = tmp_path / 'jx_tiny_in21k.pth'
    torch.save(src, path)
    model_cfg.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(path))
    model = build(cfg, model_cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    model.init_weights()
    for k, v in model.backbone.vit.state_dict().items():
        torch.testing.assert_close(v, src[k], rtol=0, atol=0, msg=k)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable
