"""Layout discovery, attachment, the task switch and the task argument, deep copies, strict checkpoint
loading next to injected modules, and a multi-task model with task-wise PEFT modules end to end."""
import copy

import pytest
import torch
import torch.nn as nn
from peft_checks import BACKBONES, SWIN, TASKS, build, images, max_diff, outputs, perturb

from mmpeft.backbones import build_peft_backbone
from mmpeft.peft.attachment import injected_state_keys
from mmpeft.peft.layout import attach, find_blocks
from mmpeft.peft.taskwise import TaskSwitch, forward_for_task
from mmpeft.registry import MODELS
from mmpeft.utils.param_count import count_params


@pytest.mark.parametrize('kind, n, windowed', [('swin', 5, True), ('mmpretrain_vit', 3, False),
                                               ('timm_vit', 3, False)])
def test_find_blocks(kind, n, windowed):
    bb = MODELS.build(BACKBONES[kind])
    blocks = find_blocks(bb)
    assert len(blocks) == n and all(b.windowed == windowed for b in blocks)
    for b in blocks:
        for name in (b.qkv, b.proj, b.fc1, b.fc2):
            assert isinstance(bb.get_submodule(name), nn.Linear)


def test_unknown_layouts_are_named():
    mmseg_vit = MODELS.build(dict(type='mmseg.VisionTransformer', img_size=32, patch_size=8, embed_dims=32,
                                  num_layers=2, num_heads=2, mlp_ratio=2))
    with pytest.raises(ValueError, match=r'layers\.0.*no fused `qkv`.*Supported layouts'):
        find_blocks(mmseg_vit)
    with pytest.raises(ValueError, match='ResNet: no transformer block found'):
        build_peft_backbone(dict(type='mmseg.ResNet', depth=18), dict(type='LoRA'))


def test_attach_skips_containers_and_refuses_twice():
    root = nn.Module()
    root.ffn = nn.Module()
    root.ffn.layers = nn.Sequential(nn.Sequential(nn.Linear(2, 2)), nn.Linear(2, 2))
    name = attach(root, 'ffn.layers.0', 'lora_fc1', nn.Linear(1, 1))
    assert name == 'ffn.layers_0_lora_fc1' and len(root.ffn.layers) == 2
    with pytest.raises(KeyError, match='applied twice'):
        attach(root, 'ffn.layers.0', 'lora_fc1', nn.Linear(1, 1))


def test_task_switch():
    s = TaskSwitch(tasks=['a', 'b'])
    assert s.num_tasks == 2 and s.resolve('b') == 1 and s.resolve(0) == 0
    with pytest.raises(KeyError):
        s.resolve(2)
    with pytest.raises(KeyError):
        s.resolve('c')
    with pytest.raises(RuntimeError, match='task='):
        s.index
    with s.use('b'):
        assert s.index == 1
    assert TaskSwitch().index == 0
    with pytest.raises(ValueError):
        TaskSwitch(num_tasks=0)
    with pytest.raises(ValueError, match="the string 'sal'"):  # not three one-letter tasks
        TaskSwitch(tasks='sal')


def test_task_argument_and_single_task_calls():
    peft, plain = build('swin', dict(type='LoRA', rank=2))
    x = images('swin')
    with torch.no_grad():
        assert max_diff(outputs(peft, x, 0), outputs(peft, x)) == 0  # one task: the argument is optional
        assert max_diff(list(forward_for_task(plain, x, 'semseg')), outputs(plain, x)) == 0
    multi, _ = build('swin', dict(type='SSF', tasks=TASKS))
    assert multi.peft.num_tasks == 4 and multi.peft.tasks == TASKS
    assert 'forward' not in vars(multi)  # the class's forward runs; the task keyword goes to a hook
    with pytest.raises(TypeError, match='forward_tasks'):
        multi(x, tasks=['sal'])
    with torch.no_grad():
        both = multi.peft.forward_tasks(x, ['sal', 'parts'])
        assert max_diff(list(both['sal']), outputs(multi, x, 'sal')) == 0
        with multi.peft.task('parts'):
            assert max_diff(list(multi(x)), list(both['parts'])) == 0


def test_deepcopy_rebinds_hooks():
    peft, _ = build('swin', dict(type='Adapter', reduction_ratio=4, num_tasks=2))
    x = images('swin')
    twin = copy.deepcopy(peft)
    perturb(twin)
    with torch.no_grad():
        assert max_diff(outputs(twin, x, 1), outputs(peft, x, 1)) > 1e-4  # the copy's adapters act
        assert max_diff(outputs(peft, x, 1), outputs(build('swin', dict(type='Adapter', reduction_ratio=4,
                                                                          num_tasks=2))[0], x, 1)) == 0


def test_strict_pretrained_loading_next_to_injected_modules(tmp_path):
    tiny = {k: v for k, v in SWIN.items() if k != 'type'}
    plain = MODELS.build(dict(type='PretrainedSwin', **tiny))
    ckpt = str(tmp_path / 'swin.pth')
    torch.save(dict(state_dict=plain.state_dict()), ckpt)
    peft = build_peft_backbone(dict(type='PretrainedSwin', init_cfg=dict(type='Pretrained', checkpoint=ckpt), **tiny),
                        dict(type='Adapter', reduction_ratio=4, tasks=TASKS))
    peft.init_weights()  # strict loader: the adapters are declared new, not missing
    assert torch.equal(peft.stages[2].blocks[1].attn.w_msa.qkv.weight, plain.stages[2].blocks[1].attn.w_msa.qkv.weight)
    keys = injected_state_keys(peft)
    assert keys and all('adapter_mlp' in k for k in keys)
    assert injected_state_keys(peft.stages[0]) == [k[len('stages.0.'):] for k in keys if k.startswith('stages.0.')]


@pytest.mark.parametrize('method', [dict(type='LoRA'), dict(type='VPTDeep', num_tokens=2),
                                    dict(type='BitFit', relative_position_bias=True)], ids=lambda m: m['type'])
def test_multi_task_model_with_task_wise_modules(method):
    """MultiTaskDenseModel calls a task-wise PEFT backbone as backbone(x, tasks=[...]); every
    trainable parameter (4 task sets + heads) gets a gradient from one loss step."""
    from mmengine.structures import PixelData

    from mmpeft.structures import MultiTaskDataSample
    tiny = {k: v for k, v in SWIN.items() if k != 'type'}
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='MultiTaskDenseModel', tasks=TASKS,
        decode_head=dict(type='AllMLPHead', in_channels=[16, 32, 64, 128], channels=16, dropout_ratio=0.0),
        backbone=dict(type='PEFTBackbone', backbone=dict(type='PretrainedSwin', **tiny),
                      method=dict(method, tasks=TASKS))))
    model.init_weights()
    assert model.task_conditioned
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        s = MultiTaskDataSample(metainfo=dict(ori_shape=(48, 48), img_shape=(48, 48), tasks=TASKS))
        s.gt_semseg = PixelData(data=torch.randint(0, 21, (1, 48, 48), generator=g))
        s.gt_parts = PixelData(data=torch.randint(0, 7, (1, 48, 48), generator=g))
        s.gt_sal = PixelData(data=torch.randint(0, 2, (1, 48, 48), generator=g))
        s.gt_normals = PixelData(data=nn.functional.normalize(torch.randn(3, 48, 48, generator=g), dim=0))
        samples.append(s)
    data = model.data_preprocessor(dict(inputs=[torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)
                                                for _ in range(2)], data_samples=samples), training=True)
    losses = model(**data, mode='loss')
    sum(losses.values()).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n, p in trainable if p.grad is None] == []
    assert any(n.startswith('backbone.') for n, _ in trainable)
    assert count_params(model)['Encoder']['trainable'] > 0


@pytest.mark.parametrize('kind', ['mmdet_swin', 'mmpretrain_swin'])
@pytest.mark.parametrize('method', [dict(type='LoRA', rank=2), dict(type='Adapter', reduction_ratio=4),
                                    dict(type='VPTDeep', num_tokens=2), dict(type='SSF'),
                                    dict(type='BitFit', relative_position_bias=True)], ids=lambda m: m['type'])
def test_other_toolboxes_swin(kind, method):
    from peft_checks import check_keys, check_step, check_trainable_is_injected
    peft, plain = build(kind, dict(method, num_tasks=2))
    check_keys(peft, plain)
    check_trainable_is_injected(peft)
    x = images(kind)
    if method['type'] != 'VPTDeep':
        with torch.no_grad():
            assert max_diff(outputs(peft, x, 1), outputs(plain, x)) == 0
    check_step(peft, x, 2)
    if method['type'] in ('LoRA', 'SSF'):
        perturb(peft)
        with torch.no_grad():
            want = outputs(peft, x, 1)
            peft.peft.merge_and_unload(task=1)
            assert max_diff(outputs(peft, x), want) < 1e-5


def test_vit_pyramid_loads_pretrained_next_to_peft_modules(tmp_path):
    import timm
    kwargs = dict(depth=2, embed_dim=32, num_heads=2, img_size=64)
    vit = timm.create_model('vit_base_patch16_224', num_classes=0, **kwargs)
    ckpt = str(tmp_path / 'vit.pth')
    torch.save(vit.state_dict(), ckpt)
    bb = build_peft_backbone(dict(type='ViTPyramid', vit_name='vit_base_patch16_224', finetune='full',
                                  vit_kwargs=kwargs, init_cfg=dict(type='Pretrained', checkpoint=ckpt)),
                             dict(type='LoRA', rank=2), extra_trainable=[r'fpn[12]\.'])
    bb.init_weights()
    assert torch.equal(bb.vit.blocks[1].attn.qkv.weight, vit.blocks[1].attn.qkv.weight)


def test_a_deep_copy_is_an_independent_attachment():
    """EMA deep-copies the model: the copy's attachment owns the copy's hooks (detaching the copy leaves
    the original adapted), and the frozen-eval rule acts on the copy's modules."""
    peft, plain = build('swin', dict(type='LoRA', rank=2, num_tasks=2))
    perturb(peft)
    x = images('swin')
    twin = copy.deepcopy(peft)
    assert twin.peft is not peft.peft and twin.peft.model is twin
    twin.peft.detach()
    with torch.no_grad():
        adapted = outputs(peft, x, 1)
        assert max_diff(adapted, outputs(plain, x)) > 1e-4  # the original still adapts
        assert max_diff(outputs(twin, x), outputs(plain, x)) == 0  # the copy is the plain backbone
    frozen = copy.deepcopy(build('swin', dict(type='LoRA', rank=2))[0])
    frozen.train()
    frozen(x)
    norms = [m for n, m in frozen.named_modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and not any(m.training for m in norms)  # the copy's own frozen norms went to eval
