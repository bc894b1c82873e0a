"""benchmarks/polyhistor_batched.py: what it counts (no timing is asserted here)."""
import importlib.util
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'demo', 'polyhistor-lite_swin-tiny_synthetic-mt-64x64.py')


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('polyhistor_batched', osp.join(ROOT, 'benchmarks',
                                                                                 'polyhistor_batched.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_batched_and_sequential_do_the_same_arithmetic(bench):
    """The batched pass runs the T*B images (task-major) through every layer: the same FLOPs as T passes
    of B images (the images are repeated at the input; nothing is shared or skipped)."""
    args = bench.parse_args(['--config', CONFIG, '--size', '64', '--batch-size', '2', '--step', 'infer',
                             '--device', 'cpu'])
    model, x, gts = bench.build(args)
    assert gts is None and not model.training
    for b in (True, False):  # inference caches each task set's generated weights: count the passes only
        bench.step(model, x, gts, batched=b)
    batched = bench.count_flops(model, x, gts, batched=True)
    sequential = bench.count_flops(model, x, gts, batched=False)
    assert len(model.tasks) == 4
    assert batched > 0 and batched == pytest.approx(sequential, rel=1e-12)
    # and batched=True really is one backbone pass of T*B images
    calls = []
    handle = model.backbone.patch_embed.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    bench.step(model, x, gts, batched=True)
    bench.step(model, x, gts, batched=False)
    handle.remove()
    assert calls == [8, 2, 2, 2, 2]


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
