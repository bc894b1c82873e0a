"""Training step time / peak memory and inference throughput: HST vs full fine-tuning vs linear probing.

Paper appendix C (Figure 7, Table 9). Every measurement runs in its own subprocess, so peak memory is
that run's alone:

* **training** -- the same Mask R-CNN (``configs/hst/mask-rcnn_vit-b_{hst,full-ft,linear-probe}_1x_coco.py``,
  random weights) on the same synthetic batch: seconds per step (forward, backward, AdamW step;
  after one warm-up step that allocates the optimizer state) and peak memory -- on CPU the process's
  peak resident set (``ru_maxrss``) and its rise over the resident set after building the model, on
  a GPU ``torch.cuda.max_memory_allocated``.
* **inference** -- Table 9's setting: the ViT-B/16 classifier at 224 x 224, plain (what full
  fine-tuning and linear probing deploy) vs HST (``vit-b_hst_vtab1k-cifar100.py``), images / s at
  batch 1 and 32.

Ratios are printed against full fine-tuning (training) and the plain ViT (inference), from this one
run. Read CPU ratios with care: the side network's stride-4 / stride-8 linears are skinny matrix
products (32-128 channels over thousands of tokens) that run far below a CPU's GEMM peak, while at
small inputs the ViT has few tokens, so CPU time overstates HST's share compared with a GPU (the
paper's Table 9 measures 0.60-0.81x of full fine-tuning's GPU throughput, 0.82-0.93x with the ViT
and the side network run in parallel); timings on a shared machine are noisy (use ``--threads`` and
a quiet machine). Defaults are sized for a few minutes on a small CPU; ``--vit-depth`` / ``--size``
shrink further::

    python benchmarks/hst_speed_memory.py                      # full ViT-B, 192 x 192, batch 2
    python benchmarks/hst_speed_memory.py --vit-depth 4 --size 128 --infer-batches 1 8   # a quick look
"""
import argparse
import copy
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import time
from typing import Dict, List

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN_CONFIGS = {
    'hst': 'mask-rcnn_vit-b_hst_1x_coco.py',
    'full-ft': 'mask-rcnn_vit-b_full-ft_1x_coco.py',
    'linear-probe': 'mask-rcnn_vit-b_linear-probe_1x_coco.py',
}
INFER_MODELS = ('plain', 'hst')


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=192, help='training image side (pixels)')
    p.add_argument('--batch', type=int, default=2, help='training batch size')
    p.add_argument('--steps', type=int, default=2, help='timed training steps (after 1 warm-up)')
    p.add_argument('--vit-depth', type=int, default=None, help='ViT layers (default: the full 12)')
    p.add_argument('--infer-size', type=int, default=224)
    p.add_argument('--infer-batches', type=int, nargs='+', default=[1, 32])
    p.add_argument('--infer-iters', type=int, default=2, help='timed inference passes per batch size')
    p.add_argument('--modes', nargs='+', default=list(TRAIN_CONFIGS), choices=list(TRAIN_CONFIGS))
    p.add_argument('--device', default='cuda' if _cuda() else 'cpu')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    p.add_argument('--skip-train', action='store_true')
    p.add_argument('--skip-infer', action='store_true')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def _rss_now_mb() -> float:
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _sync(device: str) -> None:
    import torch
    if device.startswith('cuda'):
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- workers (subprocesses)
def _build_from_config(name: str, vit_depth, device: str):
    import torch
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope

    import mmpeft  # noqa: F401
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


def _det_batch(batch: int, size: int):
    import numpy as np
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for i in range(batch):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8))
        s = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                        scale_factor=(1.0, 1.0), img_id=i))
        boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.3, 0.4, 0.9, 0.95]]) * size
        masks = np.zeros((2, size, size), dtype=np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[k, y1:y2, x1:x2] = 1
        s.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([1, 5]),
                                      masks=BitmapMasks(masks, size, size))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def worker_train(mode: str, args) -> Dict[str, float]:
    import torch
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    cfg, model = _build_from_config(TRAIN_CONFIGS[mode], args.vit_depth, args.device)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    data = _det_batch(args.batch, args.size)
    model.train()
    if args.device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    rss_built = _rss_now_mb()

    def step():
        batch = model.data_preprocessor(copy.deepcopy(data), training=True)
        losses = model(**batch, mode='loss')
        loss, _ = model.parse_losses(losses)
        optim.update_params(loss)

    step()  # warm-up: allocates AdamW state
    _sync(args.device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(args.device)
    sec = (time.perf_counter() - t0) / args.steps
    out = dict(sec_per_step=sec, rss_built_mb=rss_built, peak_rss_mb=_peak_rss_mb(),
               trainable_m=sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6)
    out['train_rise_mb'] = out['peak_rss_mb'] - rss_built
    if args.device.startswith('cuda'):
        out['peak_cuda_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


def worker_infer(kind: str, args) -> Dict[str, float]:
    import torch
    import mmpeft  # noqa: F401
    from mmpeft.backbones import HSTViT
    from mmpeft.backbones.timm_vit import build_timm_vit
    vit_kwargs = dict(depth=args.vit_depth) if args.vit_depth else {}
    torch.manual_seed(0)
    if kind == 'hst':  # the classification config's backbone and head
        backbone = HSTViT(vit_kwargs=vit_kwargs, embed_dims=[32, 48, 64, 72], out_type='pooled')
        head = torch.nn.Linear(72, 100)

        def run(x):
            return head(backbone(x)[0])
    else:  # plain ViT-B classifier: cls token after the final norm, linear head
        backbone = build_timm_vit('vit_base_patch16_224', **vit_kwargs)
        head = torch.nn.Linear(backbone.embed_dim, 100)

        def run(x):
            return head(backbone.forward_features(x)[:, 0])
    backbone.to(args.device).eval()
    head.to(args.device).eval()
    out = {}
    with torch.no_grad():
        for b in args.infer_batches:
            x = torch.randn(b, 3, args.infer_size, args.infer_size, device=args.device)
            run(x)  # warm-up
            _sync(args.device)
            t0 = time.perf_counter()
            for _ in range(args.infer_iters):
                run(x)
            _sync(args.device)
            out[f'imgs_per_s_bs{b}'] = b * args.infer_iters / (time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------- driver
def _spawn(kind: str, name: str, argv: List[str]) -> Dict[str, float]:
    cmd = [sys.executable, osp.abspath(__file__), *argv, '--worker', f'{kind}:{name}']
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith('RESULT ')]
    if res.returncode or not lines:
        raise RuntimeError(f'{kind} run {name!r} failed (exit {res.returncode}):\n{res.stderr[-3000:]}')
    return json.loads(lines[-1][len('RESULT '):])


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.worker:
        kind, name = args.worker.split(':', 1)
        result = worker_train(name, args) if kind == 'train' else worker_infer(name, args)
        print('RESULT ' + json.dumps(result), flush=True)
        return

    argv = list(sys.argv[1:] if argv is None else argv)
    depth = args.vit_depth or 12
    print(f'device {args.device}; ViT-B/16 with {depth} layers; torch threads '
          f'{args.threads or "default"}')
    if not args.skip_train:
        print(f'\n## Training: Mask R-CNN, {args.batch} x {args.size}x{args.size} images, '
              f'{args.steps} timed steps')
        rows = {}
        for mode in args.modes:
            rows[mode] = _spawn('train', mode, argv)
            print(f'  {mode}: {json.dumps({k: round(v, 3) for k, v in rows[mode].items()})}', flush=True)
        base = rows.get('full-ft')
        mem_key = 'peak_cuda_mb' if args.device.startswith('cuda') else 'train_rise_mb'
        print(f'\n| method | trainable (M) | s / step | peak RSS (MB) | memory rise in training (MB) |'
              f' time / full-ft | memory rise / full-ft |')
        print('| --- | ---: | ---: | ---: | ---: | ---: | ---: |')
        for mode, r in rows.items():
            t_ratio = f"{r['sec_per_step'] / base['sec_per_step']:.2f}" if base else '-'
            m_ratio = f"{r[mem_key] / base[mem_key]:.2f}" if base else '-'
            print(f"| {mode} | {r['trainable_m']:.2f} | {r['sec_per_step']:.2f} | {r['peak_rss_mb']:.0f} | "
                  f"{r[mem_key]:.0f} | {t_ratio} | {m_ratio} |")
    if not args.skip_infer:
        print(f'\n## Inference: ViT-B/16 classifier, {args.infer_size}x{args.infer_size}, '
              f'{args.infer_iters} timed passes')
        rows = {kind: _spawn('infer', kind, argv) for kind in INFER_MODELS}
        cols = [f'imgs_per_s_bs{b}' for b in args.infer_batches]
        print('| model | ' + ' | '.join(f'imgs/s bs={b}' for b in args.infer_batches) + ' | '
              + ' | '.join(f'HST / plain bs={b}' for b in args.infer_batches) + ' |')
        print('| --- |' + ' ---: |' * (2 * len(cols)))
        for kind, r in rows.items():
            ratios = [f"{r[c] / rows['plain'][c]:.2f}" for c in cols]
            print(f'| {kind} | ' + ' | '.join(f'{r[c]:.1f}' for c in cols) + ' | ' + ' | '.join(ratios) + ' |')


if __name__ == '__main__':
    main()
