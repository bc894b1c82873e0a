"""Training step time / peak memory and inference throughput: HST vs full fine-tuning vs linear probing.

Paper appendix C (Figure 7, Table 9). Every number is measured in this one run, and the ratios are
printed against the baseline measured beside it:

* **training** -- the same detector or segmentor (``--task det``: Mask R-CNN,
  ``configs/hst/mask-rcnn_vit-b_{hst,full-ft,linear-probe}_1x_coco.py``; ``--task seg``: UperNet,
  ``configs/hst/upernet_vit-b_{hst,full-ft,linear-probe}_160k_ade20k-512x512.py``, which needs none of
  mmcv's compiled ops, so it runs on a GPU whose mmcv was built with CPU ops only), random weights, on
  the same synthetic batch: the median seconds per step (forward, backward,
  AdamW step; after ``--warmup`` steps, the first of which allocates the optimizer state) and peak
  memory -- on CPU the process's peak resident set (``ru_maxrss``) and its rise over the resident set
  after building the model, on a GPU ``torch.cuda.max_memory_allocated``. Each mode runs in its own
  subprocess, so a peak is that mode's alone. Ratios: against full fine-tuning.
* **inference** -- HST against the *full* model, the one full fine-tuning and linear probing deploy:
  the same plain ViT-B/16 with [29]'s simple multi-scale adaptation (``ViTPyramid``), on the same
  random input, both models in one process, timed alternately (so load from other processes hits
  both alike) after warm-up; images / s from the median pass, with ``torch.inference_mode``.
  ``--infer-scope`` says what is timed:

  - ``neck`` (default): the models' feature extractor (``extract_feat`` of the two configs of
    ``--task``: backbone + FPN for Mask R-CNN, the backbone for UperNet, whose FPN is in its head). The
    heads after it are the same modules on maps of the same shapes, so they add the same cost to both
    (and with random weights a detector's proposal counts, hence its time, are noise);
  - ``backbone``: ``HSTViT`` vs ``ViTPyramid`` alone;
  - ``classifier``: Table 9's own setting -- the ViT-B/16 classifier (plain ViT, cls token + linear
    head) vs HST with the classification side network ``[32, 48, 64, 72]`` (pooled + linear head).
    Here the baseline has no multi-scale adaptation at all, so HST's whole side network is extra.

  Table 9 (GPU, classifier): HST (serial) 0.60x / 0.79x / 0.81x of full fine-tuning at batch 1 / 32
  / 128, (parallel) 0.82x / 0.92x / 0.93x.

CPU numbers are not GPU numbers: the side network's stride-4 / stride-8 layers are skinny products
(64-128 channels over thousands of tokens) and elementwise passes that are memory-bound on a CPU, and
on a machine shared with other processes timings are noisy (``--threads``, the alternating order and
the median limit that). ``--profile`` prints the top operators of each model at the last batch size.
Defaults are sized for a few minutes on a small CPU::

    python benchmarks/hst_speed_memory.py --threads 2                          # ViT-B, train 192^2 x 2
    python benchmarks/hst_speed_memory.py --skip-train --infer-size 224 --infer-batches 1 32
    python benchmarks/hst_speed_memory.py --vit-depth 4 --size 128 --infer-size 128 --infer-batches 1 8
    python benchmarks/hst_speed_memory.py --task seg --size 512 --infer-size 512   # UperNet 512x512
    python benchmarks/hst_speed_memory.py --toy   # a smoke run: 4 layers, 64x64, HST vs full-ft, 1 step
"""
import argparse
import copy
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODES = ('hst', 'full-ft', 'linear-probe')
# --task: the model that trains; the configs of configs/hst/ for each mode
TASKS = {
    'det': ('Mask R-CNN', 'mask-rcnn_vit-b_{}_1x_coco.py'),
    'seg': ('UperNet', 'upernet_vit-b_{}_160k_ade20k-512x512.py'),
}
INFER_SCOPES = ('neck', 'backbone', 'classifier')
# what --toy sets (explicit flags still win): every part of the script once, at the smallest sizes
TOY = dict(vit_depth=4, size=[64], batch=1, steps=1, warmup=1, infer_size=[64], infer_batches=[1],
           infer_iters=1, modes=['hst', 'full-ft'])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, nargs='+', default=[192], metavar='PX',
                   help='training image size: side, or height width')
    p.add_argument('--batch', type=int, default=2, help='training batch size')
    p.add_argument('--steps', type=int, default=3, help='timed training steps (median reported)')
    p.add_argument('--warmup', type=int, default=1, help='untimed passes / steps before timing')
    p.add_argument('--vit-depth', type=int, default=None, help='ViT layers (default: the full 12)')
    p.add_argument('--infer-size', type=int, nargs='+', default=[224], metavar='PX',
                   help='inference image size: side, or height width')
    p.add_argument('--infer-batches', type=int, nargs='+', default=[1, 32])
    p.add_argument('--infer-iters', type=int, default=5, help='timed passes per model and batch size')
    p.add_argument('--infer-scope', choices=INFER_SCOPES, default='neck')
    p.add_argument('--task', choices=list(TASKS), default='det',
                   help='det: Mask R-CNN (needs mmcv ops built for the device); seg: UperNet (no mmcv ops)')
    p.add_argument('--modes', nargs='+', default=list(MODES), choices=list(MODES))
    p.add_argument('--device', default='cuda' if _cuda() else 'cpu')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    p.add_argument('--profile', action='store_true', help='print the top operators (inference)')
    p.add_argument('--skip-train', action='store_true')
    p.add_argument('--skip-infer', action='store_true')
    p.add_argument('--json', default=None, help='also write all results to this file')
    p.add_argument('--toy', action='store_true',
                   help=f'tiny sizes for a smoke run: {", ".join(f"{k}={v}" for k, v in TOY.items())}')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.toy:  # UperNet's pooling module normalises 1x1 maps over the batch: 2 images at least
        p.set_defaults(**(dict(TOY, batch=2) if args.task == 'seg' else TOY))
        args = p.parse_args(argv)
    if args.task == 'seg' and args.batch < 2 and not args.skip_train:
        p.error(f'--batch {args.batch} with --task seg: UperNet\'s pooling module (BatchNorm over 1x1 maps) '
                'needs 2 images or more in training')
    for name in ('size', 'infer_size'):
        v = getattr(args, name)
        if len(v) not in (1, 2):
            p.error(f'--{name.replace("_", "-")} takes a side or a height and a width')
        setattr(args, name, (v[0], v[-1]))
    return args


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def rss_now_mb() -> float:
    """The resident set of this process now, in MiB (Linux)."""
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def peak_rss_mb() -> float:
    """The peak resident set of this process so far, in MiB (Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def sync(device: str) -> None:
    """Wait for the device's queued work (a no-op on CPU), so that a timer around it measures it."""
    import torch
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _setup(args) -> None:
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    import mmpeft  # noqa: F401


# --------------------------------------------------------------------------- workers (subprocesses)
def _build_from_config(name: str, vit_depth, device: str):
    import torch
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope

    from mmpeft.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'hst', name))
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') and 'data_preprocessor' not in model_cfg:
        model_cfg['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)
    model_cfg.backbone.init_cfg = None  # random weights: speed and memory do not depend on them
    if vit_depth:
        model_cfg.backbone.vit_kwargs = dict(depth=vit_depth)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        torch.manual_seed(0)
        model = MODELS.build(model_cfg)
    return cfg, revert_sync_batchnorm(model).to(device)


def config_name(task: str, mode: str) -> str:
    """The file under ``configs/hst/`` of ``mode`` (hst, full-ft, linear-probe) for ``task`` (det, seg)."""
    return TASKS[task][1].format(mode)


def _seg_batch(batch: int, size):
    """``batch`` random images of ``size`` (h, w) with a label map of four class rectangles and an
    ignored (255) border, as mmseg's ``PackSegInputs`` packs them."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    h, w = size
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for i in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        label = torch.full((1, h, w), 255, dtype=torch.long)
        label[:, h // 8:h // 2, w // 8:w // 2] = 1
        label[:, h // 8:h // 2, w // 2:w - w // 8] = 5
        label[:, h // 2:h - h // 8, w // 8:w - w // 8] = 2 + i % 3
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), img_path=f'{i}.jpg'))
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def _det_batch(batch: int, size):
    import numpy as np
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    h, w = size
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for i in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
                                        img_id=i))
        boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.3, 0.4, 0.9, 0.95]]) * torch.tensor([w, h, w, h])
        masks = np.zeros((2, h, w), dtype=np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[k, y1:y2, x1:x2] = 1
        s.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([1, 5]),
                                      masks=BitmapMasks(masks, h, w))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def worker_train(mode: str, args) -> Dict[str, float]:
    import torch
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    cfg, model = _build_from_config(config_name(args.task, mode), args.vit_depth, args.device)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    data = (_det_batch if args.task == 'det' else _seg_batch)(args.batch, args.size)
    if getattr(model.data_preprocessor, 'size', None):  # mmseg pads to its crop size: train at --size
        model.data_preprocessor.size = tuple(args.size)
    model.train()
    if args.device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    rss_built = rss_now_mb()

    def step():
        batch = model.data_preprocessor(copy.deepcopy(data), training=True)
        losses = model(**batch, mode='loss')
        loss, _ = model.parse_losses(losses)
        optim.update_params(loss)

    for _ in range(max(args.warmup, 1)):  # the first step allocates AdamW's state
        step()
    times = []
    for _ in range(args.steps):
        sync(args.device)
        t0 = time.perf_counter()
        step()
        sync(args.device)
        times.append(time.perf_counter() - t0)
    out = dict(sec_per_step=statistics.median(times), sec_min=min(times), sec_max=max(times),
               rss_built_mb=rss_built, peak_rss_mb=peak_rss_mb(),
               trainable_m=sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6)
    out['train_rise_mb'] = out['peak_rss_mb'] - rss_built
    if args.device.startswith('cuda'):
        out['peak_cuda_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


def _inference_models(args) -> Dict[str, Callable]:
    """``{'full': f, 'hst': f}``, each ``f(images)`` running the scope's part of that model."""
    import torch
    if args.infer_scope == 'classifier':
        from mmpeft.backbones import HSTViT
        from mmpeft.backbones.timm_vit import build_timm_vit
        vit_kwargs = dict(depth=args.vit_depth) if args.vit_depth else {}
        torch.manual_seed(0)
        hst = HSTViT(vit_kwargs=vit_kwargs, embed_dims=[32, 48, 64, 72], out_type='pooled')
        hst_head = torch.nn.Linear(72, 100)
        plain = build_timm_vit('vit_base_patch16_224', **vit_kwargs)
        plain_head = torch.nn.Linear(plain.embed_dim, 100)
        for m in (hst, hst_head, plain, plain_head):
            m.to(args.device).eval()
        return {'full': lambda x: plain_head(plain.forward_features(x)[:, 0]),
                'hst': lambda x: hst_head(hst(x)[0])}
    fns = {}
    for key, mode in (('full', 'full-ft'), ('hst', 'hst')):
        _, model = _build_from_config(config_name(args.task, mode), args.vit_depth, args.device)
        model.eval()
        fns[key] = model.backbone if args.infer_scope == 'backbone' else model.extract_feat
    return fns


def worker_infer(args) -> Dict[str, Dict[str, float]]:
    import torch
    models = _inference_models(args)
    h, w = args.infer_size
    out = {k: {} for k in models}
    for b in args.infer_batches:
        x = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(0)).to(args.device)
        times = {k: [] for k in models}
        with torch.inference_mode():
            for f in models.values():
                for _ in range(args.warmup):
                    f(x)
            order = list(models)
            for i in range(args.infer_iters):
                for k in (order if i % 2 == 0 else order[::-1]):  # alternate who goes first
                    sync(args.device)
                    t0 = time.perf_counter()
                    models[k](x)
                    sync(args.device)
                    times[k].append(time.perf_counter() - t0)
        for k, ts in times.items():
            out[k][f'imgs_per_s_bs{b}'] = b / statistics.median(ts)
            out[k][f'sec_bs{b}'] = statistics.median(ts)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        x = torch.randn(args.infer_batches[-1], 3, h, w).to(args.device)
        for k, f in models.items():
            with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
                f(x)
            print(f'\n### profile: {k}, batch {args.infer_batches[-1]}', file=sys.stderr)
            print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15),
                  file=sys.stderr)
    return out


# --------------------------------------------------------------------------- driver
def spawn_worker(script: str, kind: str, name: str, argv: List[str]) -> Tuple[dict, str]:
    """Run ``python SCRIPT ARGV --worker KIND:NAME`` in a fresh process (so its peak memory is its
    own) and return the JSON it printed on its last ``RESULT `` line, and its ``--profile`` output."""
    cmd = [sys.executable, script, *argv, '--worker', f'{kind}:{name}']
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith('RESULT ')]
    if res.returncode or not lines:
        raise RuntimeError(f'{kind} run {name!r} failed (exit {res.returncode}):\n{res.stderr[-3000:]}')
    profile = res.stderr[res.stderr.find('\n### profile'):] if '\n### profile' in res.stderr else ''
    return json.loads(lines[-1][len('RESULT '):]), profile


def _spawn(kind: str, name: str, argv: List[str]):
    return spawn_worker(osp.abspath(__file__), kind, name, argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        _setup(args)
        kind, name = args.worker.split(':', 1)
        result = worker_train(name, args) if kind == 'train' else worker_infer(args)
        print('RESULT ' + json.dumps(result), flush=True)
        return

    argv = list(sys.argv[1:] if argv is None else argv)
    depth = args.vit_depth or 12
    print(f'device {args.device}; ViT-B/16 with {depth} layers; torch threads {args.threads or "default"}')
    results = {}
    if not args.skip_train:
        h, w = args.size
        print(f'\n## Training: {TASKS[args.task][0]}, {args.batch} x {h}x{w} images, median of {args.steps} steps '
              f'after {max(args.warmup, 1)} warm-up')
        rows = {}
        for mode in args.modes:
            rows[mode], _ = _spawn('train', mode, argv)
            print(f'  {mode}: {json.dumps({k: round(v, 3) for k, v in rows[mode].items()})}', flush=True)
        results['train'] = rows
        base = rows.get('full-ft')
        mem_key = 'peak_cuda_mb' if args.device.startswith('cuda') else 'train_rise_mb'
        mem_name = 'peak CUDA memory (MB)' if mem_key == 'peak_cuda_mb' else 'memory rise in training (MB)'
        print(f'\n| method | trainable (M) | s / step | peak RSS (MB) | {mem_name} | time / full-ft |'
              f' memory / full-ft |')
        print('| --- | ---: | ---: | ---: | ---: | ---: | ---: |')
        for mode, r in rows.items():
            t_ratio = f"{r['sec_per_step'] / base['sec_per_step']:.2f}" if base else '-'
            m_ratio = f"{r[mem_key] / base[mem_key]:.2f}" if base else '-'
            print(f"| {mode} | {r['trainable_m']:.2f} | {r['sec_per_step']:.2f} | {r['peak_rss_mb']:.0f} | "
                  f"{r[mem_key]:.0f} | {t_ratio} | {m_ratio} |")
    if not args.skip_infer:
        h, w = args.infer_size
        model_name = TASKS[args.task][0]
        what = {'neck': f'{model_name} feature extractor (extract_feat)',
                'backbone': f'{model_name} backbone',
                'classifier': 'ViT-B/16 classifier (Table 9 setting)'}[args.infer_scope]
        full = ('plain ViT-B/16 + linear head' if args.infer_scope == 'classifier'
                else 'ViT-B/16 + ViTPyramid (full fine-tuning / linear probing model)')
        print(f'\n## Inference: {what}, {h}x{w}, median of {args.infer_iters} passes after '
              f'{args.warmup} warm-up; full = {full}')
        rows, profile = _spawn('infer', args.infer_scope, argv)
        results['infer'] = rows
        cols = args.infer_batches
        print('| model | ' + ' | '.join(f'imgs/s bs={b}' for b in cols) + ' | '
              + ' | '.join(f'/ full bs={b}' for b in cols) + ' |')
        print('| --- |' + ' ---: |' * (2 * len(cols)))
        for kind in ('full', 'hst'):
            r = rows[kind]
            ratios = [f"{r[f'imgs_per_s_bs{b}'] / rows['full'][f'imgs_per_s_bs{b}']:.2f}" for b in cols]
            print(f'| {kind} | ' + ' | '.join(f"{r[f'imgs_per_s_bs{b}']:.2f}" for b in cols) + ' | '
                  + ' | '.join(ratios) + ' |')
        if profile:
            print(profile)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), model=TASKS[args.task][0], results=results), f, indent=2)


if __name__ == '__main__':
    main()
