"""MultiTaskDenseModel: loss / predict / tensor modes, data preprocessing, task selection, errors."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData

import mmpeft  # noqa: F401
from mmpeft.models import LOSS_WEIGHT_PRESETS, MultiTaskDenseModel
from mmpeft.registry import MODELS
from mmpeft.structures import MultiTaskDataSample
from mmpeft.utils.param_count import count_params

TINY_SWIN = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.0)
HEAD = dict(type='AllMLPHead', in_channels=[16, 32, 64, 128], channels=16, dropout_ratio=0.0)
TASKS = ('semseg', 'parts', 'sal', 'normals')


def polyhistor_model(**kwargs) -> MultiTaskDenseModel:
    torch.manual_seed(0)
    cfg = dict(type='MultiTaskDenseModel', decode_head=HEAD,
               backbone=dict(type='PolyhistorSwin', mode='polyhistor', reduction_ratio=4, rank=2,
                             embed_dims_task=8, **TINY_SWIN))
    cfg.update(kwargs)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def shared_model(tasks=TASKS, method='FullFinetune') -> MultiTaskDenseModel:
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='MultiTaskDenseModel', decode_head=HEAD, tasks=tasks,
        backbone=dict(type='PEFTBackbone', method=dict(type=method),
                      backbone=dict(type='PretrainedSwin', **TINY_SWIN))))
    model.init_weights()
    return model


def make_sample(size=(64, 64), ori=(50, 70), tasks=TASKS, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    s = MultiTaskDataSample(metainfo=dict(ori_shape=ori, img_shape=size, tasks=list(tasks)))
    if 'semseg' in tasks:
        s.gt_semseg = PixelData(data=torch.randint(0, 21, (1, h, w), generator=g))
    if 'parts' in tasks:
        s.gt_parts = PixelData(data=torch.randint(0, 7, (1, h, w), generator=g))
    if 'sal' in tasks:
        s.gt_sal = PixelData(data=torch.randint(0, 2, (1, h, w), generator=g))
    if 'normals' in tasks:
        s.gt_normals = PixelData(data=F.normalize(torch.randn(3, h, w, generator=g), dim=0))
    return s


def batch(n=2, size=(64, 64), **kwargs):
    g = torch.Generator().manual_seed(1)
    return dict(inputs=[torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g) for _ in range(n)],
                data_samples=[make_sample(size, seed=i, **kwargs) for i in range(n)])


def test_loss_mode_gives_one_weighted_loss_per_task_and_trains_the_declared_set():
    model = polyhistor_model()
    data = model.data_preprocessor(batch(), training=True)
    losses = model(**data, mode='loss')
    assert list(losses) == [f'loss_{t}' for t in TASKS]
    assert all(torch.isfinite(v) and v.item() > 0 for v in losses.values())
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        # generated gamma = beta = 0 at initialisation: in the first step only the heads, the
        # generators of the adapter LayerNorm / biases and the Swin norms get a non-zero gradient
        if name.startswith('decode_heads.') or '.vectors.' in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        if p.requires_grad:
            assert p.grad is not None, name
        if not p.requires_grad:
            assert p.grad is None, name
    assert not any(p.requires_grad for n, p in model.named_parameters() if '.attn.w_msa.' in n)


def test_mti_net_loss_weights_scale_each_task():
    data = batch()
    uniform = polyhistor_model()
    weighted = polyhistor_model(loss_weights='mti_net')
    weighted.load_state_dict(uniform.state_dict())
    lu = uniform(**uniform.data_preprocessor(data, True), mode='loss')
    lw = weighted(**weighted.data_preprocessor(data, True), mode='loss')
    for t, w in LOSS_WEIGHT_PRESETS['mti_net'].items():
        torch.testing.assert_close(lw[f'loss_{t}'], w * lu[f'loss_{t}'])
    assert LOSS_WEIGHT_PRESETS['mti_net'] == dict(semseg=1.0, parts=2.0, sal=5.0, normals=10.0)


def test_predict_returns_original_size_fields_for_the_asked_tasks_only():
    model = polyhistor_model().eval()
    data = model.data_preprocessor(batch(), training=False)
    with torch.no_grad():
        out = model(**data, mode='predict', tasks=['sal', 'normals'])
    for s in out:
        assert 'pred_sal' in s and 'pred_normals' in s
        assert 'pred_semseg' not in s and 'pred_parts' not in s
        assert s.pred_sal.data.shape == (1, 50, 70) and s.pred_sal.data.is_floating_point()
        assert 0 <= s.pred_sal.data.min() and s.pred_sal.data.max() <= 1
        assert s.pred_normals.data.shape == (3, 50, 70)
        torch.testing.assert_close(s.pred_normals.data.norm(dim=0), torch.ones(50, 70))
    with torch.no_grad():
        out = model.test_step(batch())  # the runner's path: all test tasks
    assert out[0].pred_semseg.data.shape == (1, 50, 70) and out[0].pred_semseg.data.dtype == torch.long
    assert out[0].pred_parts.data.max() < 7 and out[0].pred_semseg.data.max() < 21


def test_predict_crops_padding_before_resizing():
    model = polyhistor_model(test_tasks=['semseg']).eval()
    # two images of different size: the smaller is padded; its prediction is its own crop resized
    data = dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8),
                        torch.randint(0, 256, (3, 32, 48), dtype=torch.uint8)],
                data_samples=[make_sample((64, 64), (64, 64)), make_sample((32, 48), (40, 60))])
    packed = model.data_preprocessor(data, training=False)
    assert packed['inputs'].shape == (2, 3, 64, 64)
    with torch.no_grad():
        out = model(**packed, mode='predict')
        logits = model(packed['inputs'], mode='tensor')['semseg']
    assert [tuple(s.pred_semseg.shape) for s in out] == [(64, 64), (40, 60)]
    up = F.interpolate(logits[1:], size=(64, 64), mode='bilinear')[..., :32, :48]
    expected = F.interpolate(up, size=(40, 60), mode='bilinear').argmax(1)
    assert torch.equal(out[1].pred_semseg.data, expected)


def test_preprocessor_pads_ground_truth_with_invalid_values():
    model = polyhistor_model()
    data = dict(inputs=[torch.zeros(3, 64, 64, dtype=torch.uint8), torch.zeros(3, 48, 56, dtype=torch.uint8)],
                data_samples=[make_sample((64, 64)), make_sample((48, 56))])
    out = model.data_preprocessor(data, training=True)
    s = out['data_samples'][1]
    assert s.gt_semseg.shape == (64, 64) and (s.gt_semseg.data[:, 48:] == 255).all()
    assert (s.gt_sal.data[:, :, 56:] == 255).all()
    assert (s.gt_normals.data[:, 48:] == 0).all()
    assert s.metainfo['batch_input_shape'] == (64, 64)
    losses = model(**out, mode='loss')
    assert all(torch.isfinite(v) for v in losses.values())


def test_tensor_mode_and_task_subsets():
    model = polyhistor_model()
    x = torch.randn(2, 3, 64, 64)
    out = model(x, mode='tensor')
    assert {t: tuple(v.shape) for t, v in out.items()} == dict(
        semseg=(2, 21, 16, 16), parts=(2, 7, 16, 16), sal=(2, 1, 16, 16), normals=(2, 3, 16, 16))
    assert list(model(x, mode='tensor', tasks=['normals'])) == ['normals']


def test_missing_ground_truth_counts_as_invalid_when_allowed():
    model = polyhistor_model(allow_missing_gt=True)
    data = model.data_preprocessor(batch(tasks=('semseg', 'sal')), training=True)
    losses = model(**data, mode='loss')
    assert losses['loss_parts'].item() == 0 and losses['loss_normals'].item() == 0
    assert losses['loss_semseg'].item() > 0


def test_shared_backbone_single_task_model_and_counts():
    model = shared_model(tasks=['semseg'])
    assert list(model.decode_heads) == ['semseg']
    losses = model(**model.data_preprocessor(batch(tasks=('semseg',)), True), mode='loss')
    assert list(losses) == ['loss_semseg']
    frozen = shared_model(method='FrozenBackbone')
    counts = count_params(frozen)
    assert counts['Encoder']['trainable'] == 0 and counts['Heads']['trainable'] == counts['All']['trainable'] > 0
    out = frozen(torch.randn(1, 3, 64, 64), mode='tensor')
    assert set(out) == set(TASKS)


def test_bad_input_is_named():
    model = polyhistor_model()
    with pytest.raises(KeyError, match="unknown task.*'depth'"):
        model(torch.randn(1, 3, 64, 64), mode='predict', tasks=['depth'])
    with pytest.raises(RuntimeError, match="invalid mode 'train'"):
        model(torch.randn(1, 3, 64, 64), mode='train')
    with pytest.raises(KeyError, match="unknown task.*'edges'"):
        polyhistor_model(tasks=['semseg', 'edges'])
    with pytest.raises(ValueError, match="preset must be one of"):
        polyhistor_model(loss_weights='kendall')
    with pytest.raises(KeyError, match="loss_weights: unknown task.*'depth'"):
        polyhistor_model(loss_weights=dict(depth=1.0))
    with pytest.raises(KeyError, match='no task embedding'):
        polyhistor_model(tasks=['semseg', 'sal'], backbone=dict(
            type='PolyhistorSwin', mode='polyhistor', tasks=['semseg'], reduction_ratio=4, rank=2, **TINY_SWIN))
    with pytest.raises(ValueError, match='ground truth'):
        model.loss(torch.randn(1, 3, 64, 64), [])
