"""Activation memory with and without activation checkpointing (``with_cp``): Polyhistor Swin-T, HST ViT-L.

Issue #11. Each model is built twice from the same seed (so with the same random weights), once with
``with_cp=False`` and once with ``with_cp=True``, and runs one forward + backward of the same
train-mode batch (loss: the sum of the mean cubes of all output maps; a cube, as the mean square of a
LayerNorm'ed map is nearly constant and would give near-zero gradients). Two measurements, each ratio taken
against the ``with_cp=False`` run of the same model in this run:

* **saved MB** -- the bytes of the tensors autograd holds for the backward pass at the end of the
  forward pass: every tensor passed to a ``torch.autograd.graph.saved_tensors_hooks`` pack hook that is
  still alive then, counted once per storage, parameters and buffers left out. With checkpointing the
  blocks' inner activations are not among them (only each checkpointed block's inputs are). It is
  deterministic and works on any device, so the CPU gives the same number a GPU would (same dtype).
  It is the memory the forward pass leaves behind, not the peak during the backward pass, which adds
  one block's recomputed activations and the gradients.
* **CUDA peak MB** (``--device cuda`` only) -- ``torch.cuda.max_memory_allocated`` over the
  forward + backward pass (after one untimed warm-up pass, so cuBLAS / cuDNN workspaces exist in both
  runs), and the *step peak*: that peak minus the memory allocated before the pass (weights, input),
  i.e. what the step itself needs. Ratios of both.

Models:

* ``swin`` -- ``PolyhistorSwin(mode='polyhistor')``, Swin-T (``embed_dims=96, depths=(2, 2, 6, 2),
  num_heads=(3, 6, 12, 24), window_size=7``), the four PASCAL-Context tasks run batched (``T*B`` samples
  after the first adapter); ``with_cp`` checkpoints every Swin block with its adapters.
* ``vitl`` -- ``HSTViT`` exactly as ``configs/hst/mask-rcnn_vit-l_hst_1x_coco.py`` builds it (ViT-L/16,
  side dims ``[64, 128, 256, 384]``, one Meta-Register token per layer, drop path 0.2, its SyncBN stem
  as BN outside distributed training; no pretrained file: random weights); ``with_cp`` checkpoints
  the 24 ViT blocks and the 24 Side blocks.

Examples::

    python benchmarks/checkpoint_memory.py                           # swin at 512, vitl at 224, batch 1 (CPU)
    python benchmarks/checkpoint_memory.py --device cuda --batch 2 --json cp.json
    python benchmarks/checkpoint_memory.py --models swin --size 256
    python benchmarks/checkpoint_memory.py --tiny                    # a smoke run: small models at 64x64
"""
import argparse
import json
import os.path as osp
import sys
import time
import weakref
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import mmpeft  # noqa: E402,F401  (registers the models)

MODELS_AVAILABLE = ('swin', 'lora-swin', 'vitl')
DEFAULT_SIZE = {'swin': 512, 'lora-swin': 512, 'vitl': 224}
TINY_SIZE = 64
VITL_CONFIG = osp.join(ROOT, 'configs', 'hst', 'mask-rcnn_vit-l_hst_1x_coco.py')
MODEL_TITLES = {'swin': 'Polyhistor Swin-T (4 tasks)', 'lora-swin': 'LoRA on mmseg Swin-T (4 tasks)',
                'vitl': 'HST ViT-L/16'}
MB = 2.0 ** 20


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', default=','.join(MODELS_AVAILABLE),
                   help=f'comma-separated, from {",".join(MODELS_AVAILABLE)}')
    p.add_argument('--size', type=int, default=None,
                   help=f'square input side for every model (default: swin {DEFAULT_SIZE["swin"]}, '
                        f'vitl {DEFAULT_SIZE["vitl"]}; {TINY_SIZE} with --tiny)')
    p.add_argument('--batch', type=int, default=None, help='images per batch (default: 1 on CPU, 2 on CUDA)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument('--json', default=None, metavar='PATH', help='also write the rows as JSON')
    p.add_argument('--tiny', action='store_true',
                   help='small models of the same classes (Swin 64-wide, 5 blocks; ViT 4 layers, 64-wide) at '
                        f'{TINY_SIZE}x{TINY_SIZE}: a smoke run')
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(',') if m.strip()]
    bad = [m for m in models if m not in MODELS_AVAILABLE]
    if bad or not models:
        p.error(f'--models: {bad or args.models!r} not among {list(MODELS_AVAILABLE)} (e.g. --models swin,vitl)')
    args.models = models
    if args.size is not None and args.size < 32:
        p.error(f'--size {args.size}: give at least 32 pixels (the coarsest stride of both backbones)')
    if args.batch is None:
        args.batch = 2 if args.device.startswith('cuda') else 1
    if args.batch < 1:
        p.error(f'--batch {args.batch}: give at least 1')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error(f'--device {args.device}: CUDA is not available here; use --device cpu')
    return args


# --------------------------------------------------------------------------- models
def build_swin(with_cp: bool, tiny: bool) -> nn.Module:
    """Polyhistor on Swin-T (or a 64-wide, 5-block Swin with ``tiny``), four tasks, random weights."""
    from mmpeft.registry import MODELS
    arch = (dict(embed_dims=64, depths=(1, 1, 2, 1), num_heads=(2, 4, 8, 16), window_size=4) if tiny else
            dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7))
    return _AllTasks(MODELS.build(dict(type='PolyhistorSwin', mode='polyhistor', with_cp=with_cp, **arch)))


class _AllTasks(nn.Module):
    """``{task: features}`` of a backbone with task-wise / task-conditioned PEFT modules (one pass per task,
    or one batched pass, as the method runs)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> dict:
        return self.backbone.peft.forward_tasks(x)


def build_lora_swin(with_cp: bool, tiny: bool) -> nn.Module:
    """mmseg's Swin-T + task-wise LoRA (the Polyhistor baseline row, 4 tasks) through PEFTBackbone; the
    toolbox's own ``with_cp=True``, which mmpeft takes over so each block recomputes under its task."""
    from mmpeft.registry import MODELS
    arch = (dict(embed_dims=64, depths=(1, 1, 2, 1), num_heads=(2, 4, 8, 16), window_size=4) if tiny else
            dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7))
    bb = MODELS.build(dict(type='PEFTBackbone', backbone=dict(type='mmseg.SwinTransformer', with_cp=with_cp, **arch),
                           method=dict(type='LoRA', tasks=['semseg', 'parts', 'sal', 'normals'])))
    assert bool(bb.peft.checkpointed) == with_cp
    return _AllTasks(bb)


def build_vitl(with_cp: bool, tiny: bool) -> nn.Module:
    """HSTViT as the paper's ViT-L Mask R-CNN config builds it (or a 4-layer 64-wide ViT with ``tiny``)."""
    from mmengine.config import Config

    from mmpeft.registry import MODELS
    cfg = Config.fromfile(VITL_CONFIG).model.backbone.to_dict()
    cfg.pop('init_cfg', None)  # random weights: the memory does not depend on their values
    if cfg.get('stem_norm_cfg', {}).get('type') == 'SyncBN':
        # what mmengine's runner turns SyncBN into outside distributed training
        cfg['stem_norm_cfg'] = dict(cfg['stem_norm_cfg'], type='BN')
    if tiny:
        cfg.update(vit_name='vit_base_patch16_224', embed_dims=[16, 24, 32, 48],
                   vit_kwargs=dict(depth=4, embed_dim=64, num_heads=2, img_size=64))
    return MODELS.build(dict(cfg, with_cp=with_cp))


BUILDERS: Dict[str, Callable[[bool, bool], nn.Module]] = {'swin': build_swin, 'lora-swin': build_lora_swin,
                                                          'vitl': build_vitl}


def output_loss(out) -> torch.Tensor:
    """Sum of the mean cubes of every output map (a dict of task -> maps, or a tuple of maps)."""
    maps = [m for v in out.values() for m in v] if isinstance(out, dict) else list(out)
    return sum(m.float().pow(3).mean() for m in maps)


# --------------------------------------------------------------------------- measurement
class SavedTensorCounter:
    """Counts the storages autograd keeps for the backward pass of what runs inside ``with counter:``.

    The pack hook only takes a weak reference, so it changes no lifetime (and no CUDA peak); after the
    forward pass :meth:`nbytes` counts the tensors still alive then, once per storage, leaving out the
    storages of ``exclude`` (a model's parameters and buffers).
    """

    def __init__(self, exclude: nn.Module):
        self._exclude = {t.untyped_storage().data_ptr() for t in list(exclude.parameters()) + list(exclude.buffers())}
        self._refs: List[weakref.ref] = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self._refs.append(weakref.ref(t))
        return t

    def __enter__(self) -> 'SavedTensorCounter':
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    def nbytes(self) -> int:
        storages: Dict[int, int] = {}
        for ref in self._refs:
            t = ref()
            if t is None:
                continue
            s = t.untyped_storage()
            if s.data_ptr() not in self._exclude:
                storages[s.data_ptr()] = s.nbytes()
        return sum(storages.values())


def measure(name: str, with_cp: bool, size: int, batch: int, device: torch.device, tiny: bool) -> dict:
    """One forward + backward of the ``name`` model: saved bytes, CUDA peaks, loss, seconds."""
    torch.manual_seed(0)
    model = BUILDERS[name](with_cp, tiny).to(device).train()
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    cuda = device.type == 'cuda'
    if cuda:  # warm-up: library workspaces and lazy kernels allocate once, outside both measurements
        output_loss(model(x)).backward()
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    torch.manual_seed(2)  # same drop-path masks in both runs
    t0 = time.perf_counter()
    counter = SavedTensorCounter(model)
    with counter:
        loss = output_loss(model(x))
    saved = counter.nbytes()
    loss.backward()
    if cuda:
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    seconds = time.perf_counter() - t0
    # with the loss, shows that both runs computed the same thing (checkpointing changes no value)
    grad_norm = torch.sqrt(sum(p.grad.double().square().sum() for p in model.parameters() if p.grad is not None))
    row = dict(model=name, with_cp=with_cp, size=size, batch=batch, device=str(device),
               saved_mb=saved / MB, loss=float(loss.detach()), grad_norm=float(grad_norm), seconds=seconds)
    if cuda:
        row.update(cuda_peak_mb=peak / MB, cuda_step_peak_mb=(peak - before) / MB)
    del model, x, loss, counter
    if cuda:
        torch.cuda.empty_cache()
    return row


def compare(without: dict, with_cp: dict) -> dict:
    """One table row: both measurements and the ratios with / without."""
    row = dict(model=without['model'], size=without['size'], batch=without['batch'], device=without['device'],
               saved_mb_without=without['saved_mb'], saved_mb_with=with_cp['saved_mb'],
               saved_ratio=with_cp['saved_mb'] / without['saved_mb'],
               seconds_without=without['seconds'], seconds_with=with_cp['seconds'],
               loss_without=without['loss'], loss_with=with_cp['loss'],
               grad_norm_without=without['grad_norm'], grad_norm_with=with_cp['grad_norm'])
    if 'cuda_peak_mb' in without:
        row.update(cuda_peak_mb_without=without['cuda_peak_mb'], cuda_peak_mb_with=with_cp['cuda_peak_mb'],
                   cuda_peak_ratio=with_cp['cuda_peak_mb'] / without['cuda_peak_mb'],
                   cuda_step_peak_mb_without=without['cuda_step_peak_mb'],
                   cuda_step_peak_mb_with=with_cp['cuda_step_peak_mb'],
                   cuda_step_peak_ratio=with_cp['cuda_step_peak_mb'] / without['cuda_step_peak_mb'])
    return row


def markdown(rows: List[dict], tiny: bool) -> str:
    cuda = any('cuda_peak_mb_without' in r for r in rows)
    head = ['model', 'input', 'batch', 'saved MB without', 'saved MB with', 'ratio']
    if cuda:
        head += ['CUDA peak MB without', 'with', 'ratio', 'step peak MB without', 'with', 'ratio']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        title = MODEL_TITLES[r['model']] + (' (tiny)' if tiny else '')
        cells = [title, f"{r['size']}x{r['size']}", str(r['batch']), f"{r['saved_mb_without']:.1f}",
                 f"{r['saved_mb_with']:.1f}", f"{r['saved_ratio']:.3f}"]
        if cuda:
            cells += [f"{r[k]:.1f}" if k.endswith('mb_without') or k.endswith('mb_with') else f"{r[k]:.3f}"
                      for k in ('cuda_peak_mb_without', 'cuda_peak_mb_with', 'cuda_peak_ratio',
                                'cuda_step_peak_mb_without', 'cuda_step_peak_mb_with', 'cuda_step_peak_ratio')]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> List[dict]:
    """Run the comparison for every asked model; print the table; return its rows."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.models:
        size = args.size or (TINY_SIZE if args.tiny else DEFAULT_SIZE[name])
        runs = [measure(name, cp, size, args.batch, device, args.tiny) for cp in (False, True)]
        row = compare(*runs)
        print(f"{name}: {size}x{size}, batch {args.batch}, {device}: forward + backward {row['seconds_without']:.1f} s "
              f"without, {row['seconds_with']:.1f} s with checkpointing; loss {row['loss_without']:.6g} / "
              f"{row['loss_with']:.6g}, gradient norm {row['grad_norm_without']:.6g} / {row['grad_norm_with']:.6g} "
              '(times are one pass each, not a speed benchmark)', flush=True)
        for key in ('loss', 'grad_norm'):
            a, b = row[f'{key}_without'], row[f'{key}_with']
            if abs(b - a) > 1e-4 * max(abs(a), 1e-12):
                print(f'WARNING: {name}: {key} {a:.9g} without, {b:.9g} with checkpointing: the two runs did not '
                      'compute the same', flush=True)
        rows.append(row)
    print()
    print(f'Activation memory kept for the backward pass, with_cp=True vs with_cp=False '
          f'(torch {torch.__version__}, {device}, float32):')
    print()
    print(markdown(rows, args.tiny))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(torch=torch.__version__, tiny=args.tiny, rows=rows), f, indent=2)
    return rows


if __name__ == '__main__':
    main()
