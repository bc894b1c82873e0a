"""Batched vs sequential task execution of PolyhistorSwin: step time and peak memory, as ratios.

Task-conditioned adapters make the backbone run once per task. ``PolyhistorSwin(batched=True)`` runs the
``T`` tasks as one pass over ``B*T`` samples (the images repeated task-major, per-task adapter weights
applied with one ``bmm``); ``batched=False`` runs ``T`` passes of ``B`` samples. This script times
one training step (the model's loss over all tasks, forward + backward, as the runner does it) or one
inference step of the full :class:`MultiTaskDenseModel` from a config, both ways, alternating the two so
that load from other processes hits both alike, and reports the ratio of the medians
``sequential / batched`` (> 1: batched is faster), and of the fastest steps (less sensitive to a loaded
machine). Peak memory of one step above what is allocated
before it: on CUDA ``max_memory_allocated``; on CPU the resident set size sampled every millisecond
(the step's activations and gradients), each variant in a fresh subprocess.

Weights are random (no checkpoint is loaded): speed and memory do not depend on them.

It also counts the floating-point operations of one step of each variant (``torch.utils.flop_counter``,
matrix products and convolutions, forward + backward) and, on CPU, the processor time (user + system,
all threads) of the timed steps. Both variants do the same arithmetic (FLOP ratio 1): any speed-up is
what batching gains in efficiency (fewer, larger kernels; on a GPU, better occupancy at small B).

Example (the issue's setting; a short run: ``--size 256 --iters 2``)::

    python benchmarks/polyhistor_batched.py --batch-size 2 --size 512 --iters 3
    python benchmarks/polyhistor_batched.py --toy   # seconds: the demo's tiny model, 64x64, a smoke run
"""
import argparse
import gc
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Dict, List

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'polyhistor', 'polyhistor_swin-t_pascal-context-mt-512x512.py')
# what --toy sets (explicit flags still win): a smoke run of the whole script in seconds
TOY = dict(config=osp.join(ROOT, 'configs', 'demo', 'polyhistor-lite_swin-tiny_synthetic-mt-64x64.py'),
           batch_size=1, size=64, iters=1, warmup=0)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--config', default=DEFAULT_CONFIG, help='a config whose backbone is PolyhistorSwin')
    p.add_argument('--batch-size', type=int, default=2, help='images per step (B)')
    p.add_argument('--size', type=int, default=512, help='square input size')
    p.add_argument('--iters', type=int, default=3, help='timed steps per variant')
    p.add_argument('--warmup', type=int, default=1, help='untimed steps per variant first')
    p.add_argument('--step', choices=('train', 'infer'), default='train',
                   help='train: loss forward + backward; infer: predict-style forward without gradients')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    p.add_argument('--glibc-mmap', action='store_true',
                   help="keep glibc's default of returning every freed block > 32 MiB to the system (CPU); "
                        'by default malloc keeps freed memory, as jemalloc / tcmalloc setups do')
    p.add_argument('--json', help='also write the results to this file')
    p.add_argument('--toy', action='store_true',
                   help='tiny sizes for a smoke run: ' + ', '.join(
                       f'{k}={osp.relpath(v, ROOT) if k == "config" else v}' for k, v in TOY.items()))
    p.add_argument('--memory-only', choices=('batched', 'sequential'), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.toy:
        p.set_defaults(**TOY)
        args = p.parse_args(argv)
    return args


def keep_freed_memory() -> bool:
    """Make glibc malloc keep freed memory instead of unmapping it (``M_MMAP_MAX = 0``, no trimming).

    By default glibc serves blocks above 32 MiB with ``mmap`` and unmaps them on free, so each training
    step page-faults (and the kernel zeroes) its large activations again. That cost grows with tensor
    size and so penalises the batched pass (tensors T times larger) more than the sequential one, a
    property of the allocator rather than of the two execution orders. Trimming is switched off
    entirely (``M_TRIM_THRESHOLD = -1``, i.e. ``SIZE_MAX``): with any finite threshold the multi-GiB
    top of the heap freed at the end of a 512x512 step is returned and faulted in again by the next
    one (measured: about 185k page faults, 2.5 s of system time per batched step with a 1 GiB
    threshold; none after warm-up without trimming). Returns whether it was applied.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c'))
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, -1))
    except (OSError, AttributeError):
        return False


def build(args):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmpeft  # noqa: F401
    from mmpeft.registry import MODELS
    init_default_scope('mmseg')
    cfg = Config.fromfile(args.config)
    if cfg.model.backbone.type != 'PolyhistorSwin':
        raise ValueError(f'{args.config}: the backbone is {cfg.model.backbone.type}, not PolyhistorSwin')
    cfg.model.backbone.init_cfg = None  # random weights: speed does not depend on them
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(args.device)
    with torch.no_grad():  # make the adapters act (gamma = beta = 0 at initialisation)
        for p in model.backbone.parameters():
            if p.requires_grad and not p.any():
                p.normal_(std=0.1)
    model.train(args.step == 'train')
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=args.device)
    gts = make_gts(args.batch_size, args.size, args.device) if args.step == 'train' else None
    return model, x, gts


def make_gts(b: int, size: int, device) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(b, 3, size, size, generator=g), dim=1)
    return dict(semseg=torch.randint(0, 21, (b, size, size), generator=g).to(device),
                parts=torch.randint(0, 7, (b, size, size), generator=g).to(device),
                sal=torch.randint(0, 2, (b, size, size), generator=g).to(device), normals=normals.to(device))


def step(model, x, gts, batched: bool) -> None:
    """One step over all tasks, with the backbone batched or not (the same model, loss and heads)."""
    model.backbone.batched = batched
    if gts is None:
        with torch.no_grad():
            model(x, mode='tensor')
        return
    model.zero_grad(set_to_none=True)
    logits = model(x, mode='tensor')
    size = x.shape[-2:]
    loss = 0.
    for t, logit in logits.items():
        pred = torch.nn.functional.interpolate(logit, size=size, mode='bilinear', align_corners=False)
        loss = loss + model.losses[t](pred, gts[t])
    loss.backward()


def count_flops(model, x, gts, batched: bool) -> float:
    """Floating-point operations (GFLOP) of one step, as ``torch.utils.flop_counter`` counts them."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        step(model, x, gts, batched)
    return counter.get_total_flops() / 1e9


def cpu_seconds() -> float:
    """Processor time of this process so far (user + system, all threads)."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sync(device) -> None:
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


class _RssSampler:
    """Peak resident set size (MiB) above the level at entry, sampled from /proc every millisecond."""

    def __enter__(self):
        import threading
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _rss() -> float:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth(self) -> float:
        return self.peak - self.base


def measure_memory(model, x, gts, batched: bool, device) -> float:
    """Peak memory (MiB) of one step above what is allocated before it."""
    gc.collect()
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(model, x, gts, batched)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    with _RssSampler() as rss:
        step(model, x, gts, batched)
    return rss.growth


def memory_in_subprocess(args, variant: str) -> float:
    """Peak memory of one step of ``variant`` in a fresh process (an allocator that kept the other
    variant's freed memory would hide this one's growth)."""
    cmd = [sys.executable, osp.abspath(__file__), '--config', args.config, '--batch-size', str(args.batch_size),
           '--size', str(args.size), '--step', args.step, '--device', args.device, '--threads', str(args.threads),
           '--memory-only', variant] + (['--glibc-mmap'] if args.glibc_mmap else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', '')))
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc_kept = not args.glibc_mmap and not str(args.device).startswith('cuda') and keep_freed_memory()
    if args.memory_only:
        model, x, gts = build(args)
        print(measure_memory(model, x, gts, args.memory_only == 'batched', args.device))
        return {}
    model, x, gts = build(args)
    tasks = list(model.tasks)
    for _ in range(args.warmup):
        for batched in (True, False):
            step(model, x, gts, batched)
    flops = {name: count_flops(model, x, gts, batched) for name, batched in (('batched', True), ('sequential', False))}
    times: Dict[str, List[float]] = dict(batched=[], sequential=[])
    cpu_times: Dict[str, List[float]] = dict(batched=[], sequential=[])
    for _ in range(args.iters):  # alternate, so that outside load hits both variants alike
        for name, batched in (('batched', True), ('sequential', False)):
            sync(args.device)
            t0, c0 = time.perf_counter(), cpu_seconds()
            step(model, x, gts, batched)
            sync(args.device)
            times[name].append(time.perf_counter() - t0)
            cpu_times[name].append(cpu_seconds() - c0)
    del model, x, gts
    memory = {v: memory_in_subprocess(args, v) for v in ('batched', 'sequential')}
    tb, ts = statistics.median(times['batched']), statistics.median(times['sequential'])
    result = dict(
        config=osp.relpath(args.config, ROOT), device=args.device, threads=torch.get_num_threads(),
        malloc_keeps_freed_memory=malloc_kept, step=args.step, batch_size=args.batch_size, tasks=len(tasks),
        size=args.size, iters=args.iters,
        batched_s=tb, sequential_s=ts, speedup=ts / tb,
        speedup_of_fastest=min(times['sequential']) / min(times['batched']), batched_times=times['batched'],
        sequential_times=times['sequential'], batched_gflop=flops['batched'],
        sequential_gflop=flops['sequential'], flop_ratio=flops['sequential'] / flops['batched'],
        batched_cpu_s=statistics.median(cpu_times['batched']),
        sequential_cpu_s=statistics.median(cpu_times['sequential']), batched_peak_mib=memory['batched'],
        sequential_peak_mib=memory['sequential'],
        memory_ratio=memory['batched'] / memory['sequential'] if memory['sequential'] > 0 else float('nan'))
    print(f"{result['config']} | {args.step} step | B={args.batch_size} T={len(tasks)} {args.size}x{args.size} "
          f"| {args.device}, {result['threads']} threads"
          f"{', malloc keeps freed memory' if malloc_kept else ''} | median of {args.iters}")
    print(f'  step time: batched {tb:.3f}s, {len(tasks)} sequential passes {ts:.3f}s '
          f"-> batched is {ts / tb:.2f}x faster (fastest steps: {result['speedup_of_fastest']:.2f}x)")
    print(f"  arithmetic: batched {flops['batched']:.1f} GFLOP, sequential {flops['sequential']:.1f} GFLOP "
          f"-> ratio sequential / batched {result['flop_ratio']:.3f} (the speed-up an equally efficient "
          'device would show)')
    if not str(args.device).startswith('cuda'):
        print(f"  processor time: batched {result['batched_cpu_s']:.2f} s, sequential "
              f"{result['sequential_cpu_s']:.2f} s per step (user + system, all threads) "
              f"-> ratio {result['sequential_cpu_s'] / result['batched_cpu_s']:.2f}")
    print(f"  peak memory: batched {memory['batched']:.0f} MiB, sequential {memory['sequential']:.0f} MiB "
          f"-> ratio batched / sequential {result['memory_ratio']:.2f}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
