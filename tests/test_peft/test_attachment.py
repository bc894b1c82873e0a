"""PEFTAttachment edge cases: checkpointing with later hooks and disabled(), merged task-wise sets,
detach of the frozen-eval rule, pickling in a fresh process, fingerprints."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from peft_checks import build, images, max_diff, outputs, perturb

import mmpeft  # noqa: F401
from mmpeft.backbones import build_peft_backbone
from mmpeft.peft.attachment import PEFTAttachment
from mmpeft.peft.checkpointing import BlockCheckpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def grads(model: nn.Module, x: torch.Tensor, **kw):
    model.zero_grad(set_to_none=True)
    sum((o ** 2).mean() for o in model(x, **kw)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_a_hook_added_after_checkpointing_still_runs_inside_the_checkpointed_call():
    ref, _ = build('timm_vit', dict(type='LoRA', rank=2))
    cp, _ = build('timm_vit', dict(type='LoRA', rank=2))
    cp.peft.checkpoint_blocks([f'timm_model.model.blocks.{i}' for i in range(3)] if hasattr(cp, 'timm_model')
                              else ['blocks.0'])
    perturb(ref)
    cp.load_state_dict(ref.state_dict())
    for m in (ref, cp):  # a later hook that scales block 1's output by 3
        block = next(mod for n, mod in m.named_modules() if n.endswith('blocks.1'))
        m.peft.hook(next(n for n, mod in m.named_modules() if mod is block), lambda mod, a, out: out * 3)
    x = images('timm_vit')
    g_ref, g_cp = grads(ref, x), grads(cp, x)
    assert g_ref.keys() == g_cp.keys() and all(torch.allclose(g_ref[k], g_cp[k], atol=1e-6) for k in g_ref)


def test_checkpointed_call_under_disabled_backpropagates_nothing():
    peft = build_peft_backbone(dict(type='mmseg.SwinTransformer', embed_dims=16, depths=(1, 1, 2, 1),
                                    num_heads=(1, 2, 2, 4), window_size=4, with_cp=True), dict(type='LoRA', rank=2))
    assert peft.peft.checkpointed  # the toolbox's with_cp taken over
    peft.train()
    with peft.peft.disabled():
        loss = sum((o ** 2).mean() for o in peft(images('swin')))
    loss.backward()  # nothing trainable took part: no error, no gradient
    assert all(p.grad is None or not p.grad.any() for p in peft.parameters())


def test_keyword_tensors_needing_grad_are_refused_under_checkpointing():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x, scale=None):
            return self.lin(x) * scale

    model = nn.Sequential(Block())
    peft = PEFTAttachment(model)
    peft._checkpoint_names = ['0']
    peft._rewrap_checkpoint()
    assert isinstance(peft._checkpoint, BlockCheckpoint)
    s = torch.ones(1, requires_grad=True)
    with pytest.raises(ValueError, match="scale"):
        model[0](torch.randn(2, 4), scale=s)
    assert torch.is_grad_enabled()  # the always-call hook put grad mode back


def test_merged_task_wise_set_refuses_other_tasks_and_disabled():
    peft, _ = build('swin', dict(type='LoRA', rank=2, tasks=['a', 'b']))
    perturb(peft)
    x = images('swin')
    with torch.no_grad():
        want = outputs(peft, x, 'a')
        peft.peft.merge(task='a')
        assert max_diff(outputs(peft, x, 'a'), want) < 1e-5
        with pytest.raises(RuntimeError, match="'a' merged"):
            peft(x, task='b')
        with pytest.raises(RuntimeError, match='unmerge'):
            with peft.peft.disabled():
                pass
        peft.peft.unmerge()
        assert max_diff(outputs(peft, x, 'a'), want) < 1e-5


def test_detach_gives_frozen_norms_back_to_the_models_mode():
    peft, _ = build('timm_vit', dict(type='LoRA', rank=2))
    held = list(peft.peft.frozen_eval_modules)
    assert held
    peft.train()
    peft(images('timm_vit'))  # the rule puts them in eval
    assert not any(peft.get_submodule(n).training for n in held)
    peft.peft.detach()
    assert all(m.training for m in peft.modules())


def test_vpt_on_swin_pickles_into_a_fresh_process(tmp_path):
    peft, _ = build('swin', dict(type='VPTDeep', num_tokens=3))
    perturb(peft)
    x = images('swin')
    with torch.no_grad():
        want = outputs(peft, x)
    torch.save(dict(model=peft, x=x, want=want), tmp_path / 'm.pt')
    code = ('import torch, mmpeft; d = torch.load(r"%s", weights_only=False); '
            'out = d["model"](d["x"]); '
            'assert type(d["model"].stages[0].blocks[0].attn.w_msa).__name__ == "MmsegWindowMSAWithExtras"; '
            'print(max((a - b).abs().max().item() for a, b in zip(out, d["want"])))') % (tmp_path / 'm.pt')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode == 0, res.stderr[-2000:]
    assert float(res.stdout.strip().splitlines()[-1]) == 0


def test_checkpointability_is_not_part_of_an_adapter_fingerprint():
    from mmpeft.utils.adapter_io import method_fingerprints
    peft, _ = build('timm_vit', dict(type='VPTShallow', num_tokens=3))
    wrapper = nn.Module()
    wrapper.backbone = peft
    fp = method_fingerprints(wrapper)['backbone']
    assert fp['type'] == 'VPTShallow' and not any('checkpoint' in k for k in fp)
