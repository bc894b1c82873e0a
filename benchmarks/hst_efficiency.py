"""HST paper Table 9 and Figure 7, row by row: FLOPs, images / s, eager vs compiled, training step and memory.

Every row is the ViT-B/16 *classifier* at 224x224 (random weights, a 100-class linear head), built with
the project's own modules, and every ratio is taken against full fine-tuning measured in the same run:

==================  =====================================================================================
row                 model
==================  =====================================================================================
``full``            full fine-tuning: the plain timm ``vit_base_patch16_224`` (``mmpretrain.TIMMBackbone``)
``vpt-deep``        ``PEFTBackbone`` (same timm ViT) + ``VPTDeep(num_tokens=64)`` (the appendix's 64 prompts)
``adaptformer``     ``PEFTBackbone`` + ``AdaptFormer(hidden_dims=64, scale=0.1)``
``ssf``             ``PEFTBackbone`` + ``SSF()``
``lora``            ``PEFTBackbone`` + ``LoRA(rank=16, scaling=1, targets=('q', 'v'))``: the settings of
                    ``configs/baselines/lora_*vit-b*`` (the paper's appendix states no classification rank;
                    Table 2's 0.29M for LoRA implies rank 8 on q, v: ``--lora-rank 8``)
``hst-serial``      ``HSTViT(embed_dims=[32, 48, 64, 72], out_type='pooled', execution='serial')``
``hst-parallel``    the same with ``execution='parallel'`` (side blocks run as the ViT layers finish)
``lora-merged``     the LoRA row after ``peft_method.merge``: the plain ViT again (no row of the paper)
``ssf-merged``      the SSF row after ``peft_method.merge`` (no row of the paper)
==================  =====================================================================================

The timm rows' head reads the class token of the (final-normed) sequence; HST's head reads its pooled
vector (mean of the last side stage, through the released affine-free BatchNorm1d): ``Linear(72, 100)``.

Columns:

1. **GFLOPs** at batch 1 with ``torch.utils.flop_counter.FlopCounterMode``, as multiply-accumulates (the
   counter's FLOPs / 2): *all ops*, and the *paper convention*: only the products with a weight
   (``mm`` / ``addmm`` / convolution: linears, patch embeddings, convolutions), without the attention
   products of two activations (``bmm`` / ``baddbmm`` / scaled-dot-product attention). The paper's 16.9 G
   for ViT-B/16 is its linear + conv MACs (16.85 G), its VPT-deep 22.3 G the same at 261 tokens; the
   ViT's attention matmuls add ~0.7 G. (torch's counter has no formula for CPU's fused attention op;
   one is added here: ``2 B h L S (E + E_v)`` FLOPs.) The counter sees only the calling thread, so
   ``hst-parallel`` is counted with its execution switched to serial (the same arithmetic).
2. **images / s** at ``--batches`` (CPU 1 / 8 / 32, GPU 1 / 32 / 128), ``torch.inference_mode``, from the
   median of ``--iters`` timed passes after ``--warmup`` untimed ones; all rows are timed round-robin in
   a shuffled order each round (so drifts of a shared machine hit them alike); ratio to ``full``; the
   paper's ratios (GPU, Table 9) beside, at the batch sizes it has.
3. **eager vs ``torch.compile``** (``--compile``): each row also compiled (``dynamic=False``, one graph
   per batch size, ``--compile-backend``) and timed in the same rounds; compiled / eager per batch
   size; a row that fails to compile is reported, not fatal.
4. **Figure 7**: training step (forward, cross-entropy, backward, AdamW step; after ``--warmup`` steps,
   the first of which allocates AdamW's state) at ``--train-batch`` and peak memory, each row in its own
   subprocess (``hst_speed_memory.spawn_worker``) so a peak is that row's alone: on CPU the peak
   resident set and its rise over the resident set after building the model (the ratio uses the rise:
   activations, gradients and optimizer state), on a GPU ``torch.cuda.max_memory_allocated`` (weights
   included). Merged rows are deployment forms and are not trained.

CPU numbers are not GPU numbers, and on a machine shared with other processes timings are noisy
(``--threads``, the round-robin order and the median limit that; a second table gives the ratios of
the fastest passes, the least disturbed ones). HST parallel's second thread on CPU comes on top of
``--threads``. On the shared 2-core development machine (under a load of 2-5 from other work) one
ViT-B/16 pass took 2.5 s at batch 1 and 3-20 s at batch 8, and a training step at batch 8 20-40 s:
FLOPs + inference at batches 1 / 8 (3 passes) took 8.5 minutes, the training rows at batch 8 16 minutes,
and batch 32 adds about four times batch 8's share; on such a machine run the parts separately, e.g.
``--batches 1 8 --skip-train`` and ``--skip-flops --skip-infer``. On a GPU the defaults (100 passes at
batches 1 / 32 / 128, training batch 32) are sized for a few minutes; ``--compile`` adds each row's
compilation (tens of seconds per row and batch size with inductor). Examples::

    python benchmarks/hst_efficiency.py --threads 2                      # CPU: bs 1 / 8 / 32, train bs 8
    python benchmarks/hst_efficiency.py --threads 2 --batches 1 8 --skip-train --json table9_cpu.json
    python benchmarks/hst_efficiency.py --device cuda --json table9_gpu.json   # H200: a few minutes
    python benchmarks/hst_efficiency.py --device cuda --compile --rows full,hst-serial,hst-parallel
    python benchmarks/hst_efficiency.py --rows full,lora,lora-merged --batches 1 8 --skip-train
    python benchmarks/hst_efficiency.py --toy   # smoke run: ViT of depth 4, width 64, 64x64, batch 1 / 2
"""
import argparse
import contextlib
import gc
import json
import logging
import math
import os.path as osp
import statistics
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = osp.dirname(osp.abspath(__file__))
if HERE not in sys.path:  # the sibling benchmark scripts (run_path does not add the script's folder)
    sys.path.insert(0, HERE)
from hst_speed_memory import peak_rss_mb, rss_now_mb, spawn_worker, sync  # noqa: E402

ROWS = ('full', 'vpt-deep', 'adaptformer', 'ssf', 'lora', 'hst-serial', 'hst-parallel', 'lora-merged',
        'ssf-merged')
#: PEFT methods of the timm rows (LoRA's rank is --lora-rank)
METHODS = {'vpt-deep': dict(type='VPTDeep', num_tokens=64),
           'adaptformer': dict(type='AdaptFormer', hidden_dims=64, scale=0.1),
           'ssf': dict(type='SSF'),
           'lora': dict(type='LoRA', scaling=1.0, targets=('q', 'v'))}
MERGED = {'lora-merged': 'lora', 'ssf-merged': 'ssf'}
HST_DIMS = [32, 48, 64, 72]
# Table 9 (GPU, ViT-B/16, the average of 100 trials)
PAPER_GFLOPS = {'full': 16.9, 'vpt-deep': 22.3, 'adaptformer': 17.1, 'ssf': 16.9, 'lora': 17.0,
                'hst-serial': 17.5, 'hst-parallel': 17.5}
PAPER_IMGS_PER_S = {'full': {1: 118.0, 32: 302.8, 128: 306.0},
                    'vpt-deep': {1: 116.0, 32: 216.5, 128: 229.6},
                    'adaptformer': {1: 101.0, 32: 291.5, 128: 296.2},
                    'ssf': {1: 93.4, 32: 269.0, 128: 274.5},
                    'lora': {1: 88.6, 32: 290.3, 128: 294.2},
                    'hst-serial': {1: 70.5, 32: 240.2, 128: 248.1},
                    'hst-parallel': {1: 96.5, 32: 277.2, 128: 284.1}}
FLOPS_TOLERANCE = 0.03  # the target: within 3% of the paper, paper convention
#: ops whose FLOPs are products with a weight (the paper convention); the rest are attention products
WEIGHT_OPS = ('aten.mm', 'aten.addmm', 'aten.convolution', 'aten._convolution', 'aten.cudnn_convolution',
              'aten.convolution_overrideable', 'aten._slow_conv2d_forward')
# fused attention ops torch's counter has no formula for (CPU's), given 2 B h L S (E + E_v) FLOPs here
SDPA_OPS_WITHOUT_FORMULA = ('_scaled_dot_product_flash_attention_for_cpu',
                            '_scaled_dot_product_fused_attention_overrideable')
# what --toy sets (explicit flags still win): every part of the script once, at the smallest sizes
TOY = dict(vit_depth=4, vit_width=64, size=64, batches=[1, 2], iters=1, warmup=1, train_batch=2,
           train_steps=1)


# --------------------------------------------------------------------------- arguments
def _rows(text: str) -> List[str]:
    rows = [r.strip() for r in text.replace(' ', ',').split(',') if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        raise argparse.ArgumentTypeError(f'unknown row(s) {unknown or text!r}; choose from {",".join(ROWS)} '
                                         f'(comma-separated)')
    return list(dict.fromkeys(rows))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='cpu or cuda')
    p.add_argument('--threads', type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument('--rows', type=_rows, default=list(ROWS),
                   help=f'comma-separated subset of {",".join(ROWS)}; full is always measured (the baseline)')
    p.add_argument('--batches', type=int, nargs='+', default=None,
                   help='inference batch sizes (default: CPU 1 8 32, GPU 1 32 128)')
    p.add_argument('--iters', type=int, default=None,
                   help='timed passes per row and batch size, median reported (default: CPU 3, GPU 100)')
    p.add_argument('--warmup', type=int, default=1, help='untimed passes (inference) / steps (training) first')
    p.add_argument('--compile', action='store_true', help='also time every row under torch.compile')
    p.add_argument('--compile-backend', default='inductor',
                   help="torch.compile backend (default inductor; 'eager' checks the capture only)")
    p.add_argument('--train-batch', type=int, default=None, help='training batch (default: CPU 8, GPU 32)')
    p.add_argument('--train-steps', type=int, default=2, help='timed training steps (median reported)')
    p.add_argument('--skip-flops', action='store_true')
    p.add_argument('--skip-infer', action='store_true')
    p.add_argument('--skip-train', action='store_true')
    p.add_argument('--classes', type=int, default=100, help='classes of the linear head')
    p.add_argument('--lora-rank', type=int, default=16, help="LoRA rank on q, v (configs' 16; Table 2's count: 8)")
    p.add_argument('--vit-depth', type=int, default=None, help='ViT layers (default: the full 12)')
    p.add_argument('--vit-width', type=int, default=None,
                   help='ViT width (default 768); heads = width // 64 (at least 1)')
    p.add_argument('--size', type=int, default=224, help='square input side in pixels')
    p.add_argument('--json', default=None, help='also write all numbers to this file')
    p.add_argument('--toy', action='store_true',
                   help=f'tiny sizes for a smoke run: {", ".join(f"{k}={v}" for k, v in TOY.items())}')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.toy:
        p.set_defaults(**TOY)
        args = p.parse_args(argv)
    cuda = args.device.startswith('cuda')
    if cuda and not torch.cuda.is_available():
        p.error(f'--device {args.device}: torch sees no CUDA device here; use --device cpu')
    if args.batches is None:
        args.batches = [1, 32, 128] if cuda else [1, 8, 32]
    if args.iters is None:
        args.iters = 100 if cuda else 3
    if args.train_batch is None:
        args.train_batch = 32 if cuda else 8
    for name in ('iters', 'train_steps', 'train_batch', 'size', 'classes', 'lora_rank'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if min(args.batches) < 1:
        p.error(f'--batches must be >= 1, got {args.batches}')
    if 'full' not in args.rows:  # every ratio is against full fine-tuning measured in the same run
        args.rows = ['full'] + args.rows
    return args


# --------------------------------------------------------------------------- models
class Classifier(nn.Module):
    """``backbone`` + a linear head: ``(B, 3, H, W)`` -> logits ``(B, classes)``.

    ``read='cls'``: the backbone returns a 1-tuple of the token sequence ``(B, T, D)``, the head reads
    its class token ``[:, 0]``; ``read='pooled'``: a 1-tuple of the pooled vector ``(B, D)``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear, read: str):
        super().__init__()
        self.backbone, self.head, self.read = backbone, head, read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)[0]
        return self.head(feats[:, 0] if self.read == 'cls' else feats)


def vit_overrides(args: argparse.Namespace) -> dict:
    """timm ``create_model`` arguments that shrink / resize ViT-B/16 (empty for the real thing)."""
    kw = {}
    if args.vit_depth:
        kw['depth'] = args.vit_depth
    if args.vit_width:
        kw.update(embed_dim=args.vit_width, num_heads=max(1, args.vit_width // 64))
    if args.size != 224:
        kw['img_size'] = args.size
    return kw


def _quiet_logs() -> Callable[[], None]:
    """Silence mmengine's INFO lines (timm feature info, PEFTBackbone counts); returns the undo."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    return lambda: logger.setLevel(level)


class RowUnavailable(Exception):
    """The row cannot be built with this checkout (e.g. HSTViT without ``execution``)."""


def build_row(row: str, args: argparse.Namespace) -> nn.Module:
    """The row's classifier with random weights on ``args.device``, in eval mode.

    Trainable parameters (``requires_grad``) are as the method sets them (all for ``full``), plus
    the head. Raises :class:`RowUnavailable` for ``hst-parallel`` when HSTViT has no ``execution``.
    """
    import mmpeft  # noqa: F401  (registers the backbones and methods)
    from mmpeft.backbones import HSTViT, build_peft_backbone
    from mmpeft.registry import MODELS
    torch.manual_seed(0)
    overrides = vit_overrides(args)
    if row.startswith('hst'):
        kw = dict(vit_kwargs=overrides, embed_dims=HST_DIMS, out_type='pooled')
        try:
            backbone = HSTViT(**kw, execution=row.split('-')[1])
        except TypeError as e:
            if 'execution' not in str(e):
                raise
            if row == 'hst-parallel':
                raise RowUnavailable(f'HSTViT takes no `execution` argument in this checkout ({e})') from e
            backbone = HSTViT(**kw)
        model = Classifier(backbone, nn.Linear(HST_DIMS[-1], args.classes), read='pooled')
    else:
        cfg = dict(type='mmpretrain.TIMMBackbone', model_name='vit_base_patch16_224', features_only=False,
                   **overrides)
        base = MERGED.get(row, row)
        if base == 'full':
            backbone = MODELS.build(cfg)
        else:
            method = dict(METHODS[base], **(dict(rank=args.lora_rank) if base == 'lora' else {}))
            backbone = build_peft_backbone(cfg, method)
        model = Classifier(backbone, nn.Linear(backbone.timm_model.embed_dim, args.classes), read='cls')
        if row in MERGED:
            _merge(model, row, args)
    return model.to(args.device).eval()


def _merge(model: Classifier, row: str, args: argparse.Namespace) -> None:
    """Give the method non-trivial (trained-looking) parameters, fold it into the frozen weights with
    the project's ``peft_method.merge``, and check the merged model reproduces the unmerged one."""
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if p.requires_grad:  # the method's parameters (the frozen ViT has requires_grad False)
                p.add_(0.02 * torch.randn_like(p))
    model.eval()
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = model(x)
    model.backbone.peft.merge_and_unload()
    with torch.inference_mode():
        diff = (model(x) - before).abs().max().item()
    left = [n for n, _ in model.backbone.named_parameters() if any(k in n for k in ('lora_', '.ssf'))]
    if left or diff > 1e-3 * max(1.0, before.abs().max().item()):
        raise RuntimeError(f'{row}: the merge left method parameters {left[:4]} or changed the logits by '
                           f'{diff:.2e}; fix mmpeft/peft merge before timing the merged row')
    model.merge_max_abs_diff = diff


@contextlib.contextmanager
def _serial_execution(model: nn.Module) -> Iterator[None]:
    """Run an HSTViT serially inside the block (the FLOP counter only sees its own thread)."""
    backbone = getattr(model, 'backbone', None)
    was = getattr(backbone, 'execution', None)
    if was is not None:
        backbone.execution = 'serial'
    try:
        yield
    finally:
        if was is not None:
            backbone.execution = was


# --------------------------------------------------------------------------- FLOPs
def _sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of scaled-dot-product attention from shapes ``(..., L, E)``, ``(..., S, E)``, ``(..., S, E_v)``:
    ``Q K^T`` and ``softmax V``, 2 FLOPs per multiply-accumulate (torch's counter convention)."""
    batch = math.prod(query[:-2])
    return 2 * batch * query[-2] * key[-2] * (query[-1] + value[-1])


def count_macs(model: nn.Module, x: torch.Tensor) -> Dict[str, object]:
    """Multiply-accumulates of one ``model(x)`` under ``torch.inference_mode``.

    Returns ``{'all': MACs, 'paper': MACs of the weight products (WEIGHT_OPS), 'attention': the rest,
    'by_op': {op name: MACs}}`` (MACs = the counter's FLOPs / 2).
    """
    from torch.utils.flop_counter import FlopCounterMode, flop_registry
    extra = {}
    for name in SDPA_OPS_WITHOUT_FORMULA:
        op = getattr(torch.ops.aten, name, None)
        if op is not None and op not in flop_registry:
            extra[op] = _sdpa_flops
    counter = FlopCounterMode(display=False, custom_mapping=extra)
    with torch.inference_mode(), _serial_execution(model), counter:
        model(x)
    by_op = {str(op): n / 2 for op, n in counter.get_flop_counts().get('Global', {}).items()}
    total = sum(by_op.values())
    paper = sum(v for k, v in by_op.items() if k in WEIGHT_OPS)
    return dict(all=total, paper=paper, attention=total - paper, by_op=by_op)


# --------------------------------------------------------------------------- inference timing
def time_rows(models: Dict[str, nn.Module], args: argparse.Namespace) -> Dict[str, Dict[str, object]]:
    """``{row: {'imgs_per_s_bs{b}', 'sec_median_bs{b}', 'sec_min_bs{b}'}}`` for eager rows and, with
    ``--compile``, ``{row + '+compile': ...}`` (or ``{'error': message}`` where compilation failed)."""
    from merge_speed import time_round_robin
    # every row's compiled Classifier.forward is the same code object: one cache entry per row and
    # batch size, which dynamo's default limit (8) would cut short by falling back to eager
    limit = 2 * len(models) * len(args.batches) + 8
    with torch._dynamo.config.patch(recompile_limit=max(limit, torch._dynamo.config.recompile_limit)):
        return _time_rows(models, args, time_round_robin)


def _time_rows(models: Dict[str, nn.Module], args: argparse.Namespace, time_round_robin) -> Dict[str, dict]:
    fns = dict(models)
    out: Dict[str, Dict[str, object]] = {k: {} for k in models}
    if args.compile:
        for row, m in models.items():
            fns[f'{row}+compile'] = torch.compile(m, backend=args.compile_backend, dynamic=False)
            out[f'{row}+compile'] = {}
    for b in args.batches:
        x = torch.randn(b, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(args.device)
        with torch.inference_mode():
            for key in [k for k in fns if k.endswith('+compile')]:
                t0 = time.perf_counter()
                try:  # the first call at a batch size compiles; a failure drops that row's compiled form
                    fns[key](x)
                    sync(args.device)
                    out[key][f'compile_s_bs{b}'] = time.perf_counter() - t0
                except Exception as e:  # noqa: BLE001  (reported per row, not fatal)
                    msg = str(e).strip().splitlines()
                    out[key] = dict(error=f'{type(e).__name__}: {msg[0][:300] if msg else ""}')
                    del fns[key]
                    print(f'  {key}: compilation failed at batch {b}: {out[key]["error"]}', flush=True)
            calls = {k: (lambda f=f: f(x)) for k, f in fns.items()}
            med = time_round_robin(calls, args.iters, args.warmup, sync=lambda: sync(args.device))
        for k, (m, lo) in med.items():
            out[k].update({f'imgs_per_s_bs{b}': b / m, f'sec_median_bs{b}': m, f'sec_min_bs{b}': lo})
        print(f'  batch {b}: ' + ', '.join(f'{k} {b / m:.2f}' for k, (m, _) in med.items()) + ' imgs/s',
              flush=True)
    return out


def ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    """``value / base``, or ``None`` where either is missing or the base is not positive."""
    if value is None or base is None or not base > 0:
        return None
    return value / base


# --------------------------------------------------------------------------- training (workers)
def worker_train(row: str, args: argparse.Namespace) -> Dict[str, float]:
    """One row's training step time and memory (run in a fresh process for a clean peak)."""
    model = build_row(row, args).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)  # appendix B.2's optimiser
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.train_batch, 3, args.size, args.size, generator=g).to(args.device)
    y = torch.randint(0, args.classes, (args.train_batch,), generator=g).to(args.device)
    if args.device.startswith('cuda'):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_built = rss_now_mb()
    # the process's own peak from here on (imports and the build can peak higher than a small model's
    # training); where the kernel does not allow the reset, the lifetime peak (ru_maxrss) stands
    clean_peak = _reset_peak_rss()

    def step() -> None:
        optim.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optim.step()

    for _ in range(max(args.warmup, 1)):  # the first step allocates AdamW's state
        step()
    times = []
    for _ in range(args.train_steps):
        sync(args.device)
        t0 = time.perf_counter()
        step()
        sync(args.device)
        times.append(time.perf_counter() - t0)
    out = dict(sec_per_step=statistics.median(times), sec_min=min(times),
               trainable_m=sum(p.numel() for p in params) / 1e6, rss_built_mb=rss_built,
               peak_rss_mb=_peak_rss_since_reset_mb() if clean_peak else peak_rss_mb(),
               peak_rss_since_build=clean_peak)
    out['train_rise_mb'] = out['peak_rss_mb'] - rss_built
    if args.device.startswith('cuda'):
        out['peak_cuda_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident set (VmHWM) to its current one: Linux's ``clear_refs`` 5."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _peak_rss_since_reset_mb() -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError('/proc/self/status has no VmHWM line')


def _spawn_train(row: str, argv: List[str]) -> Dict[str, float]:
    result, _ = spawn_worker(osp.abspath(__file__), 'train', row, argv)
    return result


# --------------------------------------------------------------------------- report
def _fmt(v: Optional[float], digits: int = 2) -> str:
    return '-' if v is None else f'{v:.{digits}f}'


def _g(v: float) -> str:
    """GMACs with 3 decimals, or 3 significant digits below 0.1 (the tiny --toy models)."""
    return f'{v:.3f}' if v >= 0.1 else f'{v:.3g}'


def _flops_section(models: Dict[str, nn.Module], args) -> Dict[str, dict]:
    x = torch.randn(1, 3, args.size, args.size).to(args.device)
    res = {}
    for row, m in models.items():
        c = count_macs(m, x)
        res[row] = dict(gmacs_all=c['all'] / 1e9, gmacs_paper=c['paper'] / 1e9,
                        gmacs_attention=c['attention'] / 1e9, by_op_gmacs={k: v / 1e9 for k, v in c['by_op'].items()})
    base = res['full']
    toy = bool(vit_overrides(args))
    for row, r in res.items():
        r['ratio_all'] = ratio(r['gmacs_all'], base['gmacs_all'])
        r['ratio_paper'] = ratio(r['gmacs_paper'], base['gmacs_paper'])
        paper = None if toy else PAPER_GFLOPS.get(row)
        r['paper_g'] = paper
        r['diff_pct'] = None if paper is None else 100 * (r['gmacs_paper'] / paper - 1)
    print('\n## GFLOPs (multiply-accumulates, batch 1): all ops, and the paper convention (weight products only)')
    print('| row | all ops (G) | paper convention (G) | attention products (G) | paper (G) | ours vs paper |'
          ' / full (paper conv.) | paper / full |')
    print('| --- |' + ' ---: |' * 7)
    for row, r in res.items():
        p = r['paper_g']
        diff = '-' if p is None else f"{r['diff_pct']:+.1f}%"
        print(f"| {row} | {_g(r['gmacs_all'])} | {_g(r['gmacs_paper'])} | {_g(r['gmacs_attention'])} | "
              f"{_fmt(p, 1)} | {diff} | {r['ratio_paper']:.3f} | {_fmt(ratio(p, PAPER_GFLOPS['full']), 3)} |")
    if toy:
        print('(shrunk / resized ViT: no paper figures to compare with)')
    else:
        off = [row for row, r in res.items()
               if r['diff_pct'] is not None and abs(r['diff_pct']) > 100 * FLOPS_TOLERANCE]
        print(f'paper convention within {100 * FLOPS_TOLERANCE:.0f}% of Table 9: '
              + ('every row' if not off else f'NOT for {", ".join(off)}'))
    if 'hst-parallel' in res:
        print('(hst-parallel counted with serial execution: the counter sees only the calling thread)')
    return res


def _infer_section(models: Dict[str, nn.Module], args) -> Dict[str, dict]:
    print(f'\n## Inference: images / s, median of {args.iters} passes after {args.warmup} warm-up, '
          f'rows round-robin, torch.inference_mode' + (f', + torch.compile ({args.compile_backend})'
                                                      if args.compile else ''))
    timed = time_rows(models, args)
    bs = args.batches
    paper_bs = [] if vit_overrides(args) else [b for b in bs if b in PAPER_IMGS_PER_S['full']]
    for row in models:
        for b in bs:
            timed[row][f'ratio_bs{b}'] = ratio(timed[row].get(f'imgs_per_s_bs{b}'),
                                              timed['full'].get(f'imgs_per_s_bs{b}'))
            if b in paper_bs:
                timed[row][f'paper_ratio_bs{b}'] = ratio(PAPER_IMGS_PER_S.get(row, {}).get(b),
                                                         PAPER_IMGS_PER_S['full'][b])
            # from the fastest passes: the least disturbed estimate on a machine shared with other work
            timed[row][f'ratio_fastest_bs{b}'] = ratio(timed['full'].get(f'sec_min_bs{b}'),
                                                      timed[row].get(f'sec_min_bs{b}'))
    print('| row | ' + ' | '.join(f'imgs/s bs={b}' for b in bs) + ' | '
          + ' | '.join(f'/ full bs={b}' for b in bs)
          + ''.join(f' | paper / full bs={b}' for b in paper_bs) + ' |')
    print('| --- |' + ' ---: |' * (2 * len(bs) + len(paper_bs)))
    for row in models:
        r = timed[row]
        paper = PAPER_IMGS_PER_S.get(row, {})
        print(f'| {row} | ' + ' | '.join(_fmt(r.get(f'imgs_per_s_bs{b}')) for b in bs) + ' | '
              + ' | '.join(_fmt(r.get(f'ratio_bs{b}')) for b in bs)
              + ''.join(f' | {_fmt(ratio(paper.get(b), PAPER_IMGS_PER_S["full"][b]))}' for b in paper_bs) + ' |')
    print('\n| row | ' + ' | '.join(f'/ full bs={b}, fastest passes' for b in bs) + ' |')
    print('| --- |' + ' ---: |' * len(bs))
    for row in models:
        print(f'| {row} | ' + ' | '.join(_fmt(timed[row].get(f'ratio_fastest_bs{b}')) for b in bs) + ' |')
    if args.compile:
        print('\n### torch.compile: compiled / eager images / s (same rounds)')
        print('| row | ' + ' | '.join(f'compiled imgs/s bs={b}' for b in bs) + ' | '
              + ' | '.join(f'compiled / eager bs={b}' for b in bs) + ' | first call (compile) s | note |')
        print('| --- |' + ' ---: |' * (2 * len(bs) + 1) + ' --- |')
        for row in models:
            c = timed[f'{row}+compile']
            for b in bs:
                c[f'ratio_to_eager_bs{b}'] = ratio(c.get(f'imgs_per_s_bs{b}'), timed[row].get(f'imgs_per_s_bs{b}'))
            first = sum(c.get(f'compile_s_bs{b}', 0.0) for b in bs)
            print(f'| {row} | ' + ' | '.join(_fmt(c.get(f'imgs_per_s_bs{b}')) for b in bs) + ' | '
                  + ' | '.join(_fmt(c.get(f'ratio_to_eager_bs{b}')) for b in bs)
                  + f" | {first:.1f} | {c.get('error', '')} |")
    return timed


def _targets(results: dict, args) -> Dict[str, object]:
    """The issue's targets, evaluated on this run's numbers (GPU targets are printed on CPU too, marked)."""
    t = {}
    infer = results.get('infer', {})
    on_gpu = args.device.startswith('cuda')
    lines = []
    if 'hst-serial' in infer and 'hst-parallel' in infer:
        v = ratio(infer['hst-parallel'].get('imgs_per_s_bs1'), infer['hst-serial'].get('imgs_per_s_bs1'))
        if v is not None:
            t['hst_parallel_over_serial_bs1'] = v
            lines.append(f'HST parallel / serial at batch 1: {v:.2f} (target >= 1.15 on a GPU'
                         + ('' if on_gpu else '; this is a CPU run') + ')')
    for row in MERGED:
        if row in infer:
            vals = {b: infer[row].get(f'ratio_bs{b}') for b in args.batches}
            t[f'{row}_over_full'] = vals
            lines.append(f'{row} / full: ' + ', '.join(f'bs={b} {_fmt(v)}' for b, v in vals.items())
                         + ' (target >= 0.98 at every batch size)')
    if lines:
        print('\n## Targets')
        for ln in lines:
            print(ln)
    return t


def _train_section(rows: List[str], argv: List[str], args, spawn) -> Dict[str, dict]:
    cuda = args.device.startswith('cuda')
    print(f'\n## Training (Figure 7): batch {args.train_batch} x {args.size}x{args.size}, forward + cross-entropy'
          f' + backward + AdamW step, median of {args.train_steps} steps after {max(args.warmup, 1)} warm-up,'
          f' each row in its own process')
    res: Dict[str, dict] = {}
    for row in rows:
        try:
            res[row] = spawn(row, argv)
        except Exception as e:  # noqa: BLE001  (one failing row does not lose the others)
            msg = str(e).strip().splitlines()
            res[row] = dict(error=f'{type(e).__name__}: {msg[-1][:300] if msg else ""}')
        print(f'  {row}: ' + json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                         for k, v in res[row].items()}), flush=True)
    mem_key = 'peak_cuda_mb' if cuda else 'train_rise_mb'
    base = res.get('full', {})
    for r in res.values():
        r['time_ratio'] = ratio(r.get('sec_per_step'), base.get('sec_per_step'))
        r['memory_ratio'] = ratio(r.get(mem_key), base.get(mem_key))
    mem_name = 'peak CUDA memory (MB)' if cuda else 'memory rise in training (MB)'
    print(f'| row | trainable (M) | s / step | peak RSS (MB) | {mem_name} | time / full | memory / full |')
    print('| --- |' + ' ---: |' * 6)
    for row, r in res.items():
        if 'error' in r:
            print(f"| {row} | failed: {r['error']} | | | | | |")
            continue
        print(f"| {row} | {r['trainable_m']:.3f} | {r['sec_per_step']:.3f} | {r['peak_rss_mb']:.0f} | "
              f"{r[mem_key]:.0f} | {_fmt(r['time_ratio'])} | {_fmt(r['memory_ratio'])} |")
    return res


# --------------------------------------------------------------------------- driver
def main(argv: Optional[Sequence[str]] = None,
         spawn: Optional[Callable[[str, List[str]], Dict[str, float]]] = None) -> dict:
    """Run the benchmark; returns what ``--json`` writes. ``spawn(row, argv)`` runs one training row
    (default: a fresh process of this script; the tests pass an in-process call)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    restore_logs = _quiet_logs()
    try:
        if args.worker:
            kind, row = args.worker.split(':', 1)
            print('RESULT ' + json.dumps(worker_train(row, args)), flush=True)
            return {}
        return _drive(args, list(sys.argv[1:] if argv is None else argv), spawn or _spawn_train)
    finally:
        restore_logs()


def _drive(args: argparse.Namespace, argv: List[str], spawn) -> dict:
    start = time.perf_counter()
    where = args.device if args.device != 'cpu' else f'cpu, {torch.get_num_threads()} threads'
    if args.device.startswith('cuda'):
        where += f' ({torch.cuda.get_device_name()})'
    shrunk = vit_overrides(args)
    print(f'HST Table 9 / Figure 7 rows on {where}; torch {torch.__version__}; ViT-B/16 classifier'
          + (f' with {shrunk}' if shrunk else '') + f', {args.size}x{args.size}, {args.classes}-class head; '
          f'LoRA rank {args.lora_rank} on q, v')
    results: dict = dict(args=vars(args), device=where, torch=torch.__version__, unavailable={})
    if not (args.skip_flops and args.skip_infer):
        models: Dict[str, nn.Module] = {}
        for row in args.rows:
            try:
                models[row] = build_row(row, args)
            except RowUnavailable as e:
                results['unavailable'][row] = str(e)
                print(f'  {row}: unavailable: {e}')
                continue
            if hasattr(models[row], 'merge_max_abs_diff'):
                print(f'  {row}: merged vs unmerged logits, max abs difference {models[row].merge_max_abs_diff:.2e}')
        results['merge_max_abs_diff'] = {r: m.merge_max_abs_diff for r, m in models.items()
                                         if hasattr(m, 'merge_max_abs_diff')}
        if not args.skip_flops:
            results['flops'] = _flops_section(models, args)
        if not args.skip_infer:
            results['infer'] = _infer_section(models, args)
            results['targets'] = _targets(results, args)
        del models
        gc.collect()
        if args.device.startswith('cuda'):
            torch.cuda.empty_cache()
    if not args.skip_train:
        rows = [r for r in args.rows if r not in MERGED and r not in results['unavailable']]
        results['train'] = _train_section(rows, argv, args, spawn)
    results['elapsed_s'] = time.perf_counter() - start
    print(f'\nelapsed {results["elapsed_s"]:.0f} s')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == '__main__':
    main()
