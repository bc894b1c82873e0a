"""Model inputs that used to train silently wrong or fail cryptically: tasks missing from the data,
1- / 4-channel images, an All-MLP head whose in_channels do not match the backbone."""
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper
from mmengine.structures import PixelData

import mmpeft  # noqa: F401
from mmpeft.backbones import HSTViT
from mmpeft.backbones.timm_vit import check_input
from mmpeft.backbones.vit_pyramid import ViTPyramid
from mmpeft.datasets import PascalContextMultiTaskDataset
from mmpeft.datasets.synthetic_pascal_mt import generate_synthetic_pascal_mt
from mmpeft.registry import MODELS
from mmpeft.structures import MultiTaskDataSample

TINY_SWIN = dict(type='PretrainedSwin', embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4),
                 window_size=4, drop_path_rate=0.0)
TINY_VIT = dict(depth=4, embed_dim=32, num_heads=2, img_size=64)
PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadMultiTaskAnnotations'),
            dict(type='PackMultiTaskInputs')]


def mt_model(tasks=('semseg', 'parts', 'sal', 'normals'), in_channels=(16, 32, 64, 128), backbone=None, **kw):
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='MultiTaskDenseModel', tasks=list(tasks), **kw,
        decode_head=dict(type='AllMLPHead', in_channels=list(in_channels), channels=8, dropout_ratio=0.0),
        backbone=backbone or dict(type='PEFTBackbone', method=dict(type='BitFit'), backbone=TINY_SWIN)))


@pytest.fixture(scope='module')
def mt_root(tmp_path_factory):
    # image i has a person iff i % 3 != 2 (so image 2's parts map is all ignore)
    return generate_synthetic_pascal_mt(str(tmp_path_factory.mktemp('mt') / 'PASCAL_MT'), num_train=3,
                                        num_val=1, size=(64, 64), seed=0)


def _batch(root, tasks, indices):
    ds = PascalContextMultiTaskDataset(data_root=root, split='train', tasks=list(tasks), pipeline=PIPELINE)
    return pseudo_collate([ds[i] for i in indices])


# ---------------------------------------------------------------- item 4: a task missing from the data
def test_task_missing_from_the_dataset_fails_at_the_first_batch(mt_root):
    model = mt_model()
    data = _batch(mt_root, ['semseg'], [0, 1])
    with pytest.raises(ValueError, match=r"no ground truth for task\(s\) \['parts', 'sal', 'normals'\].*"
                                         r"JPEGImages/.*\.jpg with ground truth for \['semseg'\].*Set model\.tasks") as e:  # noqa: E501
        model.train_step(data, optim_wrapper=OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    assert 'train_dataloader.dataset.tasks' in str(e.value) and 'allow_missing_gt=True' in str(e.value)


def test_all_ignore_parts_of_an_image_without_person_is_not_a_missing_task(mt_root):
    model = mt_model(tasks=['semseg', 'parts'])
    data = model.data_preprocessor(_batch(mt_root, ['semseg', 'parts'], [2]), training=True)
    assert (data['data_samples'][0].gt_parts.data == 255).all()  # no person in image 2
    losses = model(**data, mode='loss')
    assert losses['loss_parts'].item() == 0 and losses['loss_parts'].requires_grad
    assert losses['loss_semseg'].item() > 0


# ---------------------------------------------------------------- 1- / 4-channel input
@pytest.mark.parametrize('channels', [1, 4])
def test_preprocessor_names_an_image_with_the_wrong_channel_count(channels):
    model = mt_model(tasks=['sal'])
    samples = [MultiTaskDataSample(metainfo=dict(img_path=f'img/{i}.png', tasks=['sal'])) for i in range(2)]
    for s in samples:
        s.gt_sal = PixelData(data=torch.zeros(1, 64, 64, dtype=torch.long))
    inputs = [torch.zeros(3, 64, 64, dtype=torch.uint8), torch.zeros(channels, 64, 64, dtype=torch.uint8)]
    with pytest.raises(ValueError, match=rf"img/1\.png has {channels} channel\(s\).*expects 3.*color_type='color'"):
        model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)
    # a stacked batch is checked too
    with pytest.raises(ValueError, match=rf'has {channels} channel\(s\)'):
        model.data_preprocessor(dict(inputs=torch.zeros(2, channels, 64, 64), data_samples=None))


def test_preprocessor_without_colour_swap_expects_as_many_channels_as_means():
    from mmpeft.models import MultiTaskDataPreProcessor
    gray = MultiTaskDataPreProcessor(mean=[127.5], std=[127.5], bgr_to_rgb=False)
    out = gray(dict(inputs=[torch.full((1, 4, 4), 255, dtype=torch.uint8)], data_samples=None))
    assert out['inputs'].shape == (1, 1, 4, 4) and torch.equal(out['inputs'], torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r'has 3 channel\(s\).*expects 1'):
        gray(dict(inputs=[torch.zeros(3, 4, 4, dtype=torch.uint8)], data_samples=None))


@pytest.mark.parametrize('channels', [1, 4])
def test_vit_backbones_name_the_channel_count(channels):
    x = torch.zeros(1, channels, 32, 32)
    for backbone in (HSTViT(vit_kwargs=TINY_VIT, embed_dims=[8, 8, 8, 8], num_heads=[1, 1, 1, 1]),
                     ViTPyramid(vit_kwargs=TINY_VIT, finetune='linear_probe')):
        name = type(backbone).__name__
        with pytest.raises(ValueError, match=rf'{name}: input has {channels} channel\(s\).*expects 3.*color'):
            backbone(x)
    with pytest.raises(ValueError, match=r'input has 3 channel\(s\).*expects 1.*in_chans=3'):
        check_input(torch.zeros(1, 3, 32, 32), (16, 16), 'ViTPyramid', in_chans=1)
    check_input(torch.zeros(1, 1, 32, 32), (16, 16), 'ViTPyramid', in_chans=1)


# ---------------------------------------------------------------- All-MLP head in_channels
def test_head_in_channels_that_do_not_match_the_backbone_fail_at_build():
    # Swin widths: embed_dims * 2**stage = 16, 32, 64, 128
    with pytest.raises(ValueError, match=r'AllMLPHead has in_channels=\[32, 64, 128, 256\] but the backbone '
                                         r'.* outputs 4 features with channels \[16, 32, 64, 128\]; '
                                         r'set decode_head\.in_channels=\[16, 32, 64, 128\]'):
        mt_model(in_channels=(32, 64, 128, 256))
    with pytest.raises(ValueError, match=r'outputs 4 features .*in_channels=\[16, 32, 64, 128\]'):
        mt_model(in_channels=(16, 32, 64))


def test_build_time_probe_leaves_norm_statistics_and_modes_alone():
    resnet = dict(type='PEFTBackbone', method=dict(type='BitFit'),
                  backbone=dict(type='mmseg.ResNetV1c', depth=18, out_indices=(0, 1, 2, 3)))
    model = mt_model(tasks=['sal'], in_channels=(64, 128, 256, 512), backbone=resnet)
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.num_batches_tracked.item() == 0 and not m.running_mean.any() for m in bns)
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError, match=r'channels \[64, 128, 256, 512\]'):
        mt_model(tasks=['sal'], in_channels=(64, 128, 256, 256), backbone=resnet)
