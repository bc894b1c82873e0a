"""(Re)write the pinned parameter counts and README's count tables from one measurement.

    .venv/bin/python tools/dev/update_counts.py                 # measure, write configs/param_counts.json + README
    .venv/bin/python tools/dev/update_counts.py --device meta   # the same on the meta device (shapes only, faster)
    .venv/bin/python tools/dev/update_counts.py --readme-only   # README's tables from the pinned file
    .venv/bin/python tools/dev/update_counts.py --check         # exit 1 where README's tables differ from the pin

Why: counts are deterministic, so tests pin them to the parameter (tests/test_configs/
test_pinned_param_counts.py) and README's tables are generated from the same file
(tests/test_configs/test_readme_counts.py), so a changed count is one command to re-pin and cannot
drift between code, tests and README. Every config under ``configs/`` (bases excluded, exactly the
rows of ``count_params.py configs --recursive``) is measured with ``count_params.py``'s
``model_counts``, plus the ablation ``VARIANTS`` below (a config and ``--cfg-options``).

README's tables sit between ``<!-- counts:NAME ... -->`` and ``<!-- /counts:NAME -->``; their rows
(label, config(s), the paper's number) are ``TABLES`` below: edit a row here, then ``--readme-only``.
"""
import argparse
import json
import os.path as osp
import re
import sys
from typing import Dict, List, Sequence, Tuple, Union

from mmengine.config import DictAction

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
from count_params import config_paths, model_counts  # noqa: E402

from mmpeft.utils.param_count import millions  # noqa: E402

PINNED = osp.join(ROOT, 'configs', 'param_counts.json')
README = osp.join(ROOT, 'README.md')
Counts = Dict[str, Dict[str, int]]

_POLY = 'configs/polyhistor/polyhistor_swin-t_pascal-context-mt-512x512.py'
_LITE = 'configs/polyhistor/polyhistor-lite_swin-t_pascal-context-mt-512x512.py'
_HYPER = 'configs/hyperformer/hyperformer_swin-t_pascal-context-mt-512x512.py'
# Polyhistor paper Tables 5 / 6 (ablations): a config and its --cfg-options, pinned like the configs
VARIANTS = [f'{_LITE} model.backbone.embed_dims_task=32', f'{_LITE} model.backbone.embed_dims_task=16',
            f'{_POLY} model.backbone.rank=1', f'{_POLY} model.backbone.rank=n/8',
            f'{_POLY} model.backbone.rank=n/2', f'{_HYPER} model.backbone.reduction_ratio=16',
            f'{_HYPER} model.backbone.reduction_ratio=32']


def split_key(key: str) -> Tuple[str, dict]:
    """A pinned key is ``CONFIG [k=v ...]``, the arguments of ``count_params.py CONFIG --cfg-options``."""
    config, *options = key.split()
    if not options:
        return config, {}
    p = argparse.ArgumentParser()
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return config, p.parse_args(['--cfg-options', *options]).cfg_options


def measure(key: str, device: str = None) -> Counts:
    """The counts of a pinned key, built as ``count_params.py`` builds them (or on ``device``)."""
    config, options = split_key(key)
    return dict(model_counts(osp.join(ROOT, config), options, device=device))


#: folders of configs generated per task from one base per method (tools/dev/make_baseline_cls_configs.py,
#: whose ``--check`` is tested): their rows differ only in the head's classes, so one row per method is
#: pinned (the count of every other row is that row's with another head: test_hst_baseline_cls_configs.py)
GENERATED = {'configs/baselines/vtab1k/': '_vtab1k-dtd.py', 'configs/baselines/fgvc/': '_cub200.py'}


def all_keys() -> List[str]:
    """Every config's key (repository-relative, as count_params lists them) and the variants; of the
    :data:`GENERATED` folders one row per method."""
    configs = [osp.relpath(c, ROOT) for c in config_paths(osp.join(ROOT, 'configs'), recursive=True)]
    configs = [c for c in configs if not any(c.startswith(d) and not c.endswith(row) for d, row in GENERATED.items())]
    return configs + VARIANTS


def load_pinned(path: str = PINNED) -> Dict[str, Counts]:
    with open(path) as f:
        return json.load(f)['counts']


def write_pinned(counts: Dict[str, Counts], path: str = PINNED) -> None:
    lines = [f'  {json.dumps(k)}: {json.dumps(v)}' for k, v in counts.items()]
    about = ('Exact parameter counts of every config (random weights, as tools/analysis_tools/count_params.py '
             'builds them): part -> trainable / total. Written by tools/dev/update_counts.py; checked by '
             'tests/test_configs/test_pinned_param_counts.py. Do not edit by hand.')
    with open(path, 'w') as f:
        f.write('{\n  "about": ' + json.dumps(about) + ',\n  "counts": {\n  ' + ',\n  '.join(lines)
                + '\n  }\n}\n')


# ----------------------------------------------------------------------------------- README tables
Group = Union[str, Tuple[str, ...]]


class Ours:
    """A cell 'Encoder / All trainable' per group of configs (a group's counts are summed, e.g. the
    four single-task models); several groups are joined with ', '."""

    def __init__(self, *groups: Group):
        self.groups = [(g,) if isinstance(g, str) else tuple(g) for g in groups]

    def render(self, pinned: Dict[str, Counts]) -> str:
        def pair(group):
            enc = sum(pinned[c].get('Encoder', {}).get('trainable', 0) for c in group)
            return f"{millions(enc)} / {millions(sum(pinned[c]['All']['trainable'] for c in group))}"
        return ', '.join(pair(g) for g in self.groups)


class Count:
    """A cell with one number of one config: ``part`` ('Encoder', 'All', ...) and ``kind``."""

    def __init__(self, config: str, part: str, kind: str):
        self.config, self.part, self.kind = config, part, kind

    def render(self, pinned: Dict[str, Counts]) -> str:
        return millions(pinned[self.config].get(self.part, {}).get(self.kind, 0))


Cell = Union[str, Ours, Count]


def _b(name: str) -> str:
    return f'configs/baselines/{name}'


def _p(name: str) -> str:
    return f'configs/polyhistor/{name}'


def _h(name: str) -> str:
    return f'configs/hst/{name}'


_MT = 'swin-t_pascal-context-mt-512x512.py'
_ST = tuple(_p(f'st-full-ft-{t}_{_MT}') for t in ('semseg', 'parts', 'sal', 'normals'))


def _demo(config: str, note: str = '') -> List[Cell]:
    return [config + note, Count(config, 'Encoder', 'trainable'), Count(config, 'All', 'trainable'),
            Count(config, 'All', 'total')]


# name -> (header, alignment row, rows); the paper's columns are typed here, ours are measured
TABLES: Dict[str, Tuple[str, str, List[List[Cell]]]] = {
    'pascal': ('| method | config word | Encoder / All (ours) | paper |', '| --- | --- | ---: | ---: |', [
        ['Single-task full fine-tuning (4 models)', '`st-full-ft-*` configs', Ours(_ST), '110.07 / 112.62'],
        ['Multi-task full fine-tuning', "`dict(type='FullFinetune')`", Ours(_p(f'mt-full-ft_{_MT}')),
         '27.51 / 30.06'],
        ['Decoders only', "`dict(type='FrozenBackbone')`", Ours(_p(f'decoders-only_{_MT}')), '0.00 / 2.55'],
        ['BitFit', "`dict(type='BitFit')`", Ours(_b(f'bitfit_{_MT}')), '0.30 / 2.85'],
        ['Relative position bias', "`dict(type='RelativePositionBias')`", Ours(_b(f'relative-bias_{_MT}')),
         '0.09 / 2.64'],
        ['VPT-shallow', "`dict(type='VPTShallow')`", Ours(_b(f'vpt-shallow_{_MT}')), '0.02 / 2.57'],
        ['VPT-deep', "`dict(type='VPTDeep')`", Ours(_b(f'vpt-deep_{_MT}')), '0.88 / 3.43'],
        ['PHM layer', "`dict(type='PHMLayer')`", Ours(_b(f'phm-layer_{_MT}')), '0.59 / 3.14'],
        ['Compacter', "`dict(type='Compacter')`", Ours(_b(f'compacter_{_MT}')), '0.23 / 2.78'],
        ['Compacter++', "`dict(type='CompacterPlusPlus')`", Ours(_b(f'compacter-pp_{_MT}')), '0.11 / 2.66'],
        ['LoRA', "`dict(type='LoRA')`", Ours(_b(f'lora_{_MT}')), '0.32 / 2.87'],
        ['Adapter (rho = 2)', "`dict(type='Adapter', reduction_ratio=2)`", Ours(_b(f'adapter_{_MT}')),
         '8.69 / 11.24'],
        ['Low-rank adapter', "`dict(type='LowRankAdapter')`", Ours(_b(f'low-rank-adapter_{_MT}')),
         '0.34 / 2.89'],
        ['Shared Adapter (rho = 2)', "`dict(type='SharedAdapter')`", Ours(_b(f'shared-adapter_{_MT}')),
         '2.20 / 4.74'],
        ['Hyperformer (rho = 8)', "`PolyhistorSwin(mode='hyperformer')`", Ours(_HYPER), '72.77 / 75.32'],
        ['Polyhistor (rho = 16, r = n/4)', "`PolyhistorSwin(mode='polyhistor')`", Ours(_POLY), '6.41 / 8.96'],
        ['Polyhistor-Lite (rho = 2, k = 64)', "`PolyhistorSwin(mode='polyhistor_lite')`", Ours(_LITE),
         '0.41 / 2.96'],
    ]),
    'hst': ('| config | Encoder / All (ours) | paper (All) |', '| --- | ---: | ---: |', [
        ['HST ViT-B, classification dims (VTAB-1k CIFAR-100)', Ours(_h('vtab1k/vit-b_hst_vtab1k-cifar100.py')),
         '0.78'],
        ['HST-S ViT-B, side dims [20, 24, 32, 36] (VTAB-1k CIFAR-100)',
         Ours(_h('vtab1k/vit-b_hst-s_vtab1k-cifar100.py')), '0.28'],
        ['HST ViT-B + Mask R-CNN 1x', Ours(_h('mask-rcnn_vit-b_hst_1x_coco.py')), '30.6'],
        ['HST ViT-B + Cascade Mask R-CNN 3x', Ours(_h('cascade-mask-rcnn_vit-b_hst_3x-ms_coco.py')), '68.4'],
        ['HST ViT-B + ATSS 3x', Ours(_h('atss_vit-b_hst_3x-ms_coco.py')), '18.5'],
        ['HST ViT-B + Semantic FPN', Ours(_h('fpn_vit-b_hst_80k_ade20k-512x512.py')), '14.7'],
        ['HST ViT-B + UperNet', Ours(_h('upernet_vit-b_hst_160k_ade20k-512x512.py')), '39.9'],
        ['HST ViT-L + Mask R-CNN 1x', Ours(_h('mask-rcnn_vit-l_hst_1x_coco.py')), '39.62'],
        ['Linear probing, Mask R-CNN / UperNet', Ours(_h('mask-rcnn_vit-b_linear-probe_1x_coco.py'),
                                                      _h('upernet_vit-b_linear-probe_160k_ade20k-512x512.py')),
         '27.8 / 41.2'],
        ['Full fine-tuning, Mask R-CNN / UperNet', Ours(_h('mask-rcnn_vit-b_full-ft_1x_coco.py'),
                                                        _h('upernet_vit-b_full-ft_160k_ade20k-512x512.py')),
         '113.6 / 127.0'],
    ] + [[f'{name}, Mask R-CNN / UperNet', Ours(_b(f'{m}_mask-rcnn_vit-b_1x_coco.py'),
                                                  _b(f'{m}_upernet_vit-b_160k_ade20k-512x512.py')), paper]
         for name, m, paper in [('VPT-deep', 'vpt-deep', '28.4 / 41.8'), ('AdaptFormer', 'adaptformer', '29.0 / 42.4'),
                                ('SSF', 'ssf', '28.0 / 41.4'), ('LoRA', 'lora', '28.4 / 41.8')]]),
    'demo': ('| config | Encoder trainable | All trainable | All total |', '| --- | ---: | ---: | ---: |', [
        _demo('configs/demo/polyhistor-lite_swin-tiny_synthetic-mt-64x64.py'),
        _demo('configs/demo/decoders-only_swin-tiny_synthetic-mt-64x64.py'),
        _demo('configs/demo/mt-full-ft_swin-tiny_synthetic-mt-64x64.py'),
        _demo('configs/demo/bitfit_swin-tiny_synthetic-seg-64x64.py', ' (single task, mmseg)'),
        _demo('configs/examples/bitfit_swin-t_in1k.py', ' (mmpretrain)'),
        _demo('configs/examples/bitfit_upernet_swin-t_ade20k-512x512.py', ' (mmseg)'),
        _demo('configs/examples/lntuning_mask-rcnn_swin-t_fpn_1x_coco.py', ' (mmdet)'),
    ]),
}


def render_table(name: str, pinned: Dict[str, Counts]) -> str:
    header, align, rows = TABLES[name]
    cells = [[c if isinstance(c, str) else c.render(pinned) for c in row] for row in rows]
    return '\n'.join([header, align] + ['| ' + ' | '.join(r) + ' |' for r in cells])


def block_pattern(name: str) -> 're.Pattern':
    """README's generated block NAME: the opening marker line, the table, a blank line (so Markdown
    ends the table before the closing marker), the closing marker."""
    return re.compile(rf'(<!-- counts:{name}\b[^\n]*-->\n)(.*?)\n\n(<!-- /counts:{name} -->)', re.S)


def readme_blocks(text: str) -> Dict[str, str]:
    """The text of each generated table in README, by name; a missing block is an error naming it."""
    out = {}
    for name in TABLES:
        m = block_pattern(name).search(text)
        if m is None:
            raise ValueError(f'README.md has no block `<!-- counts:{name} ... -->` ... `<!-- /counts:{name} -->`: '
                             f'put the two marker lines around the {name!r} count table')
        out[name] = m.group(2)
    return out


def update_readme(pinned: Dict[str, Counts], path: str = README) -> List[str]:
    """Rewrite the generated tables in place; returns the names of those that changed."""
    with open(path) as f:
        text = f.read()
    changed = [n for n, old in readme_blocks(text).items() if old != render_table(n, pinned)]
    for name in TABLES:
        text = block_pattern(name).sub(lambda m: m.group(1) + render_table(name, pinned) + '\n\n' + m.group(3), text)
    with open(path, 'w') as f:
        f.write(text)
    return changed


def main(argv: Sequence[str] = None) -> int:
    p = argparse.ArgumentParser(description='Re-pin every config\'s parameter counts and regenerate README\'s tables')
    p.add_argument('--readme-only', action='store_true', help='no measuring: README from configs/param_counts.json')
    p.add_argument('--check', action='store_true', help='report README tables that differ from the pin; exit 1 if any')
    p.add_argument('--device', choices=['cpu', 'meta'], default=None, help='build device (default: as count_params)')
    args = p.parse_args(argv)
    if args.check:
        with open(README) as f:
            blocks = readme_blocks(f.read())
        stale = [n for n, text in blocks.items() if text != render_table(n, load_pinned())]
        for n in stale:
            print(f'README.md table {n!r} differs from configs/param_counts.json; '
                  f'run: .venv/bin/python tools/dev/update_counts.py --readme-only')
        return 1 if stale else 0
    if not args.readme_only:
        old = load_pinned() if osp.isfile(PINNED) else {}
        counts = {}
        for key in all_keys():
            counts[key] = measure(key, args.device)
            if old.get(key) not in (None, counts[key]):
                print(f'changed: {key}: {old[key]["All"]} -> {counts[key]["All"]}')
        write_pinned(counts)
        print(f'wrote {osp.relpath(PINNED, ROOT)} ({len(counts)} entries)')
    changed = update_readme(load_pinned())
    print(f'README.md tables regenerated; changed: {", ".join(changed) or "none"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
