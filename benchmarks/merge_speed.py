"""Inference speed of merged LoRA / SSF against the plain backbone, measured side by side in one run.

    python benchmarks/merge_speed.py [--model vit_small_patch16_224] [--batch 4] [--img 224]
                                     [--repeats 10] [--methods LoRA SSF] [--threads N]
    python benchmarks/merge_speed.py --toy   # seconds: a 2-layer ViT-Ti on 32x32, a smoke run

For each method the same timm ViT (random init, eval mode, no autograd) is timed as: the plain
backbone, the backbone with the method injected (unmerged: extra hooks and branch matmuls), and after
``method.merge`` (folded into the frozen weights: the plain architecture). Variants are timed
round-robin (one forward each per round, after warm-up) so that drifts of a shared machine hit them
alike, in a shuffled order each round; medians and minima (the least disturbed run, the better
estimate on a shared CPU) and their ratios to the plain backbone are printed. A merged model should run at
ratio ~1.00; the merge is also checked to reproduce the unmerged outputs.
"""
import argparse
import copy
import random
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

# what --toy sets (explicit flags still win): a smoke run of the whole script in seconds
TOY = dict(model='vit_tiny_patch16_224', depth=2, img=32, batch=1, repeats=2, warmup=1)


def timm_vit(model: str, img: int, depth: Optional[int] = None) -> dict:
    cfg = dict(type='mmpretrain.TIMMBackbone', model_name=model, features_only=False, img_size=img)
    return cfg if depth is None else dict(cfg, depth=depth)


def time_round_robin(fns: Dict[str, Callable[[], torch.Tensor]], repeats: int, warmup: int = 2,
                     sync: Callable[[], None] = lambda: None) -> Dict[str, Tuple[float, float]]:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    order = list(fns)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)  # no variant always runs first (or right after another) in a round
        for k in order:
            sync()
            t0 = time.perf_counter()
            fns[k]()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', default='vit_small_patch16_224')
    p.add_argument('--depth', type=int, default=None, help="ViT layers (default: the model's own)")
    p.add_argument('--img', type=int, default=224)
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--warmup', type=int, default=2, help='untimed rounds first')
    p.add_argument('--methods', nargs='+', default=['LoRA', 'SSF'])
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--toy', action='store_true',
                   help=f'tiny sizes for a smoke run: {", ".join(f"{k}={v}" for k, v in TOY.items())}')
    args = p.parse_args(argv)
    if args.toy:
        p.set_defaults(**TOY)
        args = p.parse_args(argv)
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    import mmpeft  # noqa: F401  (registers the methods; after parsing, so --help is instant)
    from mmpeft.backbones import build_peft_backbone
    from mmpeft.registry import MODELS
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = timm_vit(args.model, args.img, args.depth)
    x = torch.randn(args.batch, 3, args.img, args.img, device=args.device)

    base = MODELS.build(cfg).to(args.device)
    base.eval()  # (some toolbox backbones' train() returns None)
    variants: Dict[str, nn.Module] = {'plain': base}
    for name in args.methods:
        peft = build_peft_backbone(cfg, dict(type=name)).to(args.device)
        peft.load_state_dict(base.state_dict(), strict=False)
        # a trained-looking method: non-trivial parameters, so merging has something to fold
        with torch.no_grad():
            for pname, prm in peft.named_parameters():
                if prm.requires_grad:
                    prm.add_(0.02 * torch.randn_like(prm))
        peft.eval()
        merged = copy.deepcopy(peft)
        merged.peft.merge_and_unload()
        with torch.no_grad():
            diff = max((a - b).abs().max().item() for a, b in zip(peft(x), merged(x)))
        print(f'{name}: merged vs unmerged max abs difference {diff:.2e}')
        variants[f'{name} unmerged'] = peft
        variants[f'{name} merged'] = merged

    fns = {k: (lambda m=m: m(x)) for k, m in variants.items()}
    sync = torch.cuda.synchronize if args.device.startswith('cuda') else (lambda: None)
    with torch.no_grad():
        med = time_round_robin(fns, args.repeats, args.warmup, sync=sync)
    where = args.device if args.device != 'cpu' else f'cpu, {torch.get_num_threads()} threads'
    print(f'\n{args.model}, batch {args.batch}, {args.img}x{args.img}, {where}, '
          f'{args.repeats} rounds of one forward per variant (shuffled)')
    print('| variant | median (ms) | min (ms) | median ratio to plain | min ratio to plain |')
    print('| --- | ---: | ---: | ---: | ---: |')
    base_med, base_min = med['plain']
    for k, (m, lo) in med.items():
        print(f'| {k} | {1000 * m:.1f} | {1000 * lo:.1f} | {m / base_med:.3f} | {lo / base_min:.3f} |')


if __name__ == '__main__':
    main()
