"""benchmarks/polyhistor_batched.py: what it counts (no timing is asserted here)."""
import importlib.util
import os.path as osp
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'demo', 'polyhistor-lite_swin-tiny_synthetic-mt-64x64.py')


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('polyhistor_batched', osp.join(ROOT, 'benchmarks',
                                                                                 'polyhistor_batched.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _prefix_gflop(backbone, x: torch.Tensor) -> float:
    """FLOPs of what the batched pass shares: patch embedding and the first block's attention."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        tokens, hw = backbone.patch_embed(x)
        block = backbone.stages[0].blocks[0]
        block.attn(block.norm1(tokens), hw)
    return counter.get_total_flops() / 1e9


def test_flop_difference_is_the_shared_prefix(bench):
    """Batched inference saves exactly (T - 1) copies of the shared prefix, nothing else differs."""
    args = bench.parse_args(['--config', CONFIG, '--size', '64', '--batch-size', '2', '--step', 'infer',
                             '--device', 'cpu'])
    model, x, gts = bench.build(args)
    assert gts is None and not model.training
    batched = bench.count_flops(model, x, gts, batched=True)
    sequential = bench.count_flops(model, x, gts, batched=False)
    tasks = len(model.tasks)
    assert tasks == 4
    prefix = _prefix_gflop(model.backbone, x)
    assert prefix > 0
    assert sequential - batched == pytest.approx((tasks - 1) * prefix, rel=1e-9)


def test_train_step_counts_backward(bench):
    """A training step counts forward and backward, and leaves gradients on the trainable set only."""
    common = ['--config', CONFIG, '--size', '64', '--batch-size', '2', '--device', 'cpu']
    model, x, gts = bench.build(bench.parse_args(common + ['--step', 'train']))
    assert set(gts) == set(model.tasks)
    train = bench.count_flops(model, x, gts, batched=True)
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert grads and grads <= trainable
    assert any(n.startswith('backbone.adapters.') for n in grads)
    model.eval()
    infer = bench.count_flops(model, x, None, batched=True)
    # backward through the frozen encoder costs input gradients at least: more than the forward again
    assert train > 2 * infer


def test_keep_freed_memory_applies():
    """The allocator setting the CPU timings rely on is accepted by this libc (in a child process: it
    would otherwise change this test process's memory behaviour)."""
    script = ('import importlib.util, sys; '
              f'spec = importlib.util.spec_from_file_location("b", {osp.join(ROOT, "benchmarks", "polyhistor_batched.py")!r}); '  # noqa: E501
              'm = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); '
              'sys.exit(0 if m.keep_freed_memory() else 3)')
    assert subprocess.run([sys.executable, '-c', script], cwd=ROOT).returncode == 0
