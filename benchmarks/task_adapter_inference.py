"""Per-task inference of the hyper-network methods against the same network with plain adapters.

    python benchmarks/task_adapter_inference.py [--img 224] [--batch 1] [--repeats 10] [--threads N]
    python benchmarks/task_adapter_inference.py --toy    # seconds: a tiny Swin, a smoke run

In inference a task's adapter weights depend only on the task, so Hyperformer, Polyhistor and
Polyhistor-Lite generate them once per task and reuse them (mmpeft.peft.task_conditioned); the
reference is the same Swin-T with plain per-task adapters (``TaskAdapters``, what
``tools/model_converters/export_task_adapters.py`` exports). Each method and its export are timed
round-robin in one run (one ``backbone(x, task=...)`` call each per round, no autograd, eval mode,
shuffled order), for one task at a time as a deployed model runs; medians and minima and the ratio
method / plain are printed (target <= 1.03). ``first call`` times the call that generates the weights
(the cache emptied before each), for comparison.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from merge_speed import time_round_robin  # noqa: E402

import mmpeft  # noqa: E402,F401
from mmpeft.backbones import PolyhistorSwin  # noqa: E402
from mmpeft.peft.task_conditioned import export_task_adapters  # noqa: E402

SWIN_T = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)
TINY = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=4)
MODES = dict(hyperformer=dict(), polyhistor=dict(), polyhistor_lite=dict())  # the paper's defaults
TASKS = ('semseg', 'parts', 'sal', 'normals')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--img', type=int, default=224)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--modes', nargs='+', default=list(MODES), choices=list(MODES))
    p.add_argument('--toy', action='store_true', help='tiny Swin, 64x64, 2 repeats')
    return p.parse_args(argv)


def randomize(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    if args.toy:
        args.img, args.repeats, args.warmup = 64, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    arch = TINY if args.toy else SWIN_T
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.img, args.img)
    results = {}
    print(f'Swin {"tiny" if args.toy else "T"}, {args.batch}x3x{args.img}x{args.img}, one task per call, '
          f'{torch.get_num_threads()} threads, {args.repeats} rounds')
    for mode in args.modes:
        model = PolyhistorSwin(mode=mode, tasks=TASKS, **arch)
        randomize(model)
        model.eval()
        method_cfg, state = export_task_adapters(model)
        plain = PolyhistorSwin(mode='task_adapters', tasks=TASKS, reduction_ratio=method_cfg['reduction_ratio'],
                               **arch)
        plain.load_state_dict(state, strict=True)
        plain.eval()
        with torch.no_grad():
            worst = max(float((a - b).abs().max()) for a, b in zip(model(x, task='sal'), plain(x, task='sal')))

            def first_call():
                model.peft.method.clear_cache()
                return model(x, task='sal')
            fns = {mode: lambda: model(x, task='sal'), 'plain adapters': lambda: plain(x, task='sal'),
                   'first call': first_call}
            t = time_round_robin(fns, args.repeats, warmup=args.warmup)
        ratio = t[mode][0] / t['plain adapters'][0], t[mode][1] / t['plain adapters'][1]
        first = t['first call'][0] / t['plain adapters'][0]
        results[mode] = dict(seconds=t, ratio_median=ratio[0], ratio_min=ratio[1], first_call_ratio=first,
                             max_diff=worst)
        print(f'{mode:16s} cached {t[mode][0] * 1e3:8.1f} ms | plain {t["plain adapters"][0] * 1e3:8.1f} ms | '
              f'ratio {ratio[0]:.3f} (min {ratio[1]:.3f}) | first call {first:.3f}x | max diff {worst:.1e}')
    return results


if __name__ == '__main__':
    main()
