"""Task-conditioned adapters as methods: the inference cache of generated weights, the export to plain
per-task adapters (library function and tool), Lite's scales on non-Swin widths."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

import mmpeft  # noqa: F401
from mmpeft.backbones import PolyhistorSwin, build_peft_backbone
from mmpeft.peft.hypernet import AdapterParams
from mmpeft.peft.task_conditioned import (
    AdapterSite,
    HyperSite,
    LiteSite,
    PolyhistorLite,
    TaskAdapters,
    export_task_adapters,
)
from mmpeft.registry import MODELS, PEFT_METHODS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_SWIN = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.0)
TIMM_VIT = dict(type='mmpretrain.TIMMBackbone', model_name='vit_tiny_patch16_224', features_only=True,
                out_indices=(0, 1), img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
TASKS = ('semseg', 'parts', 'sal')


def randomize(model: torch.nn.Module, seed: int = 1) -> None:
    """Every trainable tensor random (the zero-initialised generated LayerNorm would hide the adapters)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def swin(mode: str, **kwargs) -> PolyhistorSwin:
    torch.manual_seed(0)
    extra = dict(rank=2) if mode == 'polyhistor' else {}
    model = PolyhistorSwin(mode=mode, tasks=TASKS, reduction_ratio=4 if mode != 'polyhistor_lite' else 2,
                           embed_dims_task=8, **extra, **TINY_SWIN, **kwargs)
    model.init_weights()
    randomize(model)
    return model.eval()


@pytest.fixture
def generation_count(monkeypatch):
    """How many times a site generated its weights."""
    calls = []
    for cls in (HyperSite, LiteSite):
        original = cls.params_for

        def counted(self, model, index, _original=original):
            calls.append(self.site)
            return _original(self, model, index)
        monkeypatch.setattr(cls, 'params_for', counted)
    return calls


@pytest.mark.parametrize('mode', ['hyperformer', 'polyhistor', 'polyhistor_lite'])
def test_inference_generates_once_per_task_until_a_parameter_changes(mode, generation_count):
    model = swin(mode)
    sites = len(model.adapters)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        first = model(x, task='sal')
        assert len(generation_count) == sites
        again = model(x, task='sal')
        assert len(generation_count) == sites  # reused
        model(x, task='parts')
        assert len(generation_count) == 2 * sites  # another task: its own weights
        model.peft.forward_tasks(x, ['sal', 'parts'])
        assert len(generation_count) == 3 * sites  # the batched pair is its own entry
    for a, b in zip(first, again):
        assert torch.equal(a, b)

    # an optimizer step invalidates: the next output is the new weights' (against a fresh model)
    generation_count.clear()
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(f.square().mean() for f in model(x, task='sal')).backward()
    assert len(generation_count) == sites  # with autograd: generated for the call
    opt.step()
    model.eval()
    generation_count.clear()
    with torch.no_grad():
        stepped = model(x, task='sal')
    assert len(generation_count) == sites
    fresh = swin(mode)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        for a, b in zip(stepped, fresh(x, task='sal')):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert max(float((a - b).abs().max()) for a, b in zip(stepped, first)) > 1e-4

    # load_state_dict invalidates (any model's load: the generation counter is process-wide)
    with torch.no_grad():
        model(x, task='sal')
        generation_count.clear()
        model(x, task='sal')
        assert not generation_count
        model.load_state_dict(swin(mode).state_dict())
        reloaded = model(x, task='sal')
        assert len(generation_count) == sites
        for a, b in zip(reloaded, first):  # the original weights again
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_forward_with_autograd_never_uses_the_cache(generation_count):
    model = swin('polyhistor')
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x, task='sal')
    generation_count.clear()
    out = model(x, task='sal')
    assert len(generation_count) == len(model.adapters)
    assert all(f.requires_grad for f in out)


def _compare(a: dict, b: dict, atol: float = 1e-5) -> float:
    worst = 0.0
    for t in a:
        for u, v in zip(a[t], b[t]):
            worst = max(worst, float((u - v).abs().max()))
    assert worst <= atol, worst
    return worst


@pytest.mark.parametrize('mode', ['hyperformer', 'polyhistor', 'polyhistor_lite'])
def test_export_gives_plain_adapters_with_the_same_outputs(mode):
    model = swin(mode)
    method_cfg, state = export_task_adapters(model)
    assert method_cfg['type'] == 'TaskAdapters' and method_cfg['tasks'] == list(TASKS)
    assert not any(k.startswith(('task_embeds', 'template_hypernet')) for k in state)
    plain = PolyhistorSwin(mode='task_adapters', tasks=TASKS, reduction_ratio=method_cfg['reduction_ratio'],
                           **TINY_SWIN).eval()
    plain.load_state_dict(state, strict=True)
    assert isinstance(plain.peft.method, TaskAdapters)
    assert not any(isinstance(m, (HyperSite, LiteSite)) for m in plain.modules())
    # the stored weights are those a hand call of each site's hyper-network gives for task 'parts'
    site = next(iter(model.adapters))
    with torch.no_grad():
        want = model.method.adapter_params(model, torch.tensor([1]))[site]
    for field, w in zip(AdapterParams._fields, want):
        torch.testing.assert_close(getattr(plain.adapters[site], field)[1], w[0])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _compare(model.peft.forward_tasks(x), plain.peft.forward_tasks(x))
        _compare(model.peft.forward_tasks(x, batched=False), plain.peft.forward_tasks(x, batched=False))


def test_export_of_a_peft_backbone_on_a_vit():
    torch.manual_seed(0)
    bb = build_peft_backbone(dict(TIMM_VIT), dict(type='Polyhistor', tasks=['a', 'b'], reduction_ratio=4,
                                                  rank=2, embed_dims_task=8))
    randomize(bb)
    bb.eval()  # (mmpretrain's TIMMBackbone.train returns None)
    method_cfg, state = export_task_adapters(bb)
    plain = build_peft_backbone(dict(TIMM_VIT), method_cfg)
    plain.eval()
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _compare(bb.peft.forward_tasks(x), plain.peft.forward_tasks(x))
    with pytest.raises(ValueError, match='no hyper-network method'):
        export_task_adapters(plain)


def test_export_tool_round_trip(tmp_path):
    cfg_path = tmp_path / 'poly.py'
    cfg_path.write_text(
        "custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)\n"
        f"model = dict(type='PolyhistorSwin', mode='polyhistor_lite', tasks={list(TASKS)!r}, reduction_ratio=2,\n"
        f"             embed_dims_task=8, **{TINY_SWIN!r})\n")
    model = swin('polyhistor_lite')
    ckpt = tmp_path / 'trained.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    out = tmp_path / 'exported'
    res = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'model_converters', 'export_task_adapters.py'),
                          str(cfg_path), str(ckpt), str(out)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'largest feature difference' in res.stdout
    from mmengine.config import Config
    cfg = Config.fromfile(str(out / 'config.py'))
    assert cfg.model.mode == 'task_adapters' and 'embed_dims_task' not in cfg.model
    plain = MODELS.build(cfg.model).eval()
    sd = torch.load(out / 'task_adapters.pth', weights_only=True)['state_dict']
    plain.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _compare(model.peft.forward_tasks(x), plain.peft.forward_tasks(x))


def test_lite_scales_on_other_widths():
    lite = PEFT_METHODS.build(dict(type='PolyhistorLite', tasks=['a', 'b']))
    assert lite._scales([64, 64, 128, 320, 512], 64) == [1, 1, 2, 5, 8]  # PVT-Small's stage widths
    with pytest.raises(ValueError, match=r'not multiples of the template width d1=96.*template_dims=8'):
        lite._scales([96, 200], 96)
    fixed = PolyhistorLite(tasks=['a'], scales=(1, 2))
    with pytest.raises(ValueError, match='do not map the template width'):
        fixed._scales([16, 48], 16)


def test_a_site_is_an_adapter_site():
    assert issubclass(HyperSite, AdapterSite) and issubclass(LiteSite, AdapterSite)


def test_added_keys_are_known_to_loaders_that_see_part_of_the_model():
    from mmpeft.peft.attachment import injected_state_keys
    model = swin('polyhistor_lite')
    keys = set(injected_state_keys(model))
    plain_keys = set(PolyhistorSwin(mode='polyhistor_lite', tasks=TASKS, embed_dims_task=8, reduction_ratio=2,
                                    **TINY_SWIN).peft.detach().state_dict())
    assert keys == set(model.state_dict()) - plain_keys
    assert {'task_embeds', 'template_hypernet.p'} <= keys
    assert injected_state_keys(model.stages[0]) == []  # nothing added inside a stage
    model.peft.detach()
    assert injected_state_keys(model) == [] and 'peft_added' not in vars(model)


FAMILIES = dict(
    mmdet_swin=dict(type='mmdet.SwinTransformer', embed_dims=16, depths=(2, 2), num_heads=(1, 2), strides=(4, 2),
                    window_size=4, out_indices=(0, 1)),
    mmpretrain_swin=dict(type='mmpretrain.SwinTransformer', window_size=4, img_size=32, out_indices=(0, 1),
                         arch=dict(embed_dims=16, depths=(2, 2), num_heads=(1, 2)), pad_small_map=True),
    timm_vit=TIMM_VIT,
    mmpretrain_vit=dict(type='mmpretrain.VisionTransformer', img_size=32, patch_size=8, out_indices=(0, 1),
                        arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
                        out_type='featmap'),
)
METHODS = dict(Hyperformer=dict(reduction_ratio=4, embed_dims_task=8),
               Polyhistor=dict(reduction_ratio=4, rank=2, embed_dims_task=8),
               PolyhistorLite=dict(embed_dims_task=8))


@pytest.mark.parametrize('family', list(FAMILIES))
@pytest.mark.parametrize('method', list(METHODS))
def test_batched_equals_per_task_on_every_family(family, method):
    """One pass over the T*B images gives each task's per-task pass: outputs and gradients."""
    torch.manual_seed(0)
    bb = build_peft_backbone(dict(FAMILIES[family]), dict(type=method, tasks=list(TASKS), **METHODS[method]))
    randomize(bb)
    bb.eval()
    x = torch.randn(2, 3, 32, 32)
    g = torch.Generator().manual_seed(3)
    results = []
    for batched in (True, False):
        bb.zero_grad()
        out = bb.peft.forward_tasks(x, ['sal', 'semseg'], batched=batched)
        if not results:
            readout = {t: [torch.randn(f.shape, generator=g) for f in feats] for t, feats in out.items()}
        sum((f * w).sum() for t in out for f, w in zip(out[t], readout[t])).backward()
        results.append((out, {n: p.grad.clone() for n, p in bb.named_parameters() if p.grad is not None}))
    (a, ga), (b, gb) = results
    assert list(a) == ['sal', 'semseg']
    for t in a:
        for u, v in zip(a[t], b[t]):
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)
    assert (a['sal'][-1] - a['semseg'][-1]).abs().max() > 1e-3  # the tasks really differ
    assert ga.keys() == gb.keys() and ga
    for n in ga:
        assert (ga[n] - gb[n]).norm() <= 1e-5 * gb[n].norm() + 1e-6, n
