"""Print one of the HST / Polyhistor paper tables with our numbers beside the paper's (markdown).

    python tools/analysis_tools/paper_table.py TABLE WORK_DIR_ROOT [--method KEY] [--work-dir-template T]

TABLE: ``hst-vtab`` (HST Table 2, VTAB-1k, with the Natural / Specialized / Structured means and the
mean over the 19 tasks, which is the paper's "Average"; the paper's group means are computed from its
per-task numbers, as the paper prints none), ``hst-fgvc`` (Table 3, ImageNet-21k and MAE
weights), ``hst-coco`` (Table 4), ``hst-ade20k`` (Table 5, mIoU and +MS) or ``polyhistor-pascal``
(Polyhistor Table 1, PASCAL-Context with Swin-T). The paper numbers are in ``paper_tables.json`` next
to this file, transcribed from the papers with the source table named.

Per setting of the table (e.g. "UperNet 160k") three rows: the paper's, ours, and ours minus the
paper's. Ours come from ``WORK_DIR_ROOT/<name>/test_metrics.json`` as ``tools/test.py --out`` writes
it (``tools/hst/sweep.sh``, ``run_vtab.sh`` and ``run_fgvc.sh`` write ``WORK_ROOT/<config name>/
test_metrics.json``); the ADE20K "+MS" column from ``test_metrics_tta.json`` in the same folder
(``tools/test.py CONFIG CKPT --tta --out WORK_DIR_ROOT/<config name>/test_metrics_tta.json``). A missing
file or metric prints ``-``. Work dir names are config names:

- hst-vtab: HST-B ``vit-b_hst_vtab1k-<task>``, HST-S ``vit-b_hst-s_vtab1k-<task>`` (tasks as the
  configs name them: cifar100, caltech101, ..., smallnorb-ele); other methods
  ``<method>_vit-b_vtab1k-<task>``.
- hst-fgvc: ``vit-b-in21k_<method>_<dataset>`` and ``vit-b-mae_<method>_<dataset>`` (datasets cifar100,
  cub200, oxford-flowers, stanford-dogs, stanford-cars).
- hst-coco: HST as ``configs/hst`` (``mask-rcnn_vit-b_hst_1x_coco``, ``mask-rcnn_vit-b_hst_3x-ms_coco``,
  ``cascade-mask-rcnn_vit-b_hst_3x-ms_coco``, ``atss_vit-b_hst_3x-ms_coco``, ``mask-rcnn_vit-l_hst_1x_coco``),
  others ``<method>_mask-rcnn_vit-b_1x_coco`` ... as ``configs/baselines``.
- hst-ade20k: ``fpn_vit-b_hst_80k_ade20k-512x512``, ``upernet_vit-b_hst_160k_ade20k-512x512``; others
  ``<method>_upernet_vit-b_160k_ade20k-512x512`` / ``<method>_fpn_vit-b_80k_ade20k-512x512``.
- polyhistor-pascal: ``<method>_swin-t_pascal-context-mt-512x512`` (``configs/polyhistor``,
  ``configs/baselines``, ``configs/hyperformer``); single-task full fine-tuning reads one work dir per task,
  ``st-full-ft-<task>_swin-t_pascal-context-mt-512x512``. Our delta_up is computed from our four numbers
  against the paper's single-task full fine-tuning row (higher is better, normals lower).

``<method>`` is the method key (``--method``; ``full`` and ``linear`` are named ``full-ft`` and
``linear-probe`` in config names); ``--method list`` prints the keys of a table. The exact names are
data in ``paper_tables.json`` (``work_dirs``, ``work_dir_overrides``); ``--work-dir-template`` replaces
them for all settings, with ``{slug}`` (the task / dataset) and ``{setting}`` filled in.
"""
import argparse
import json
import math
import os.path as osp
import sys
from typing import Dict, List, Optional

TABLES_FILE = osp.join(osp.dirname(osp.abspath(__file__)), 'paper_tables.json')
TABLE_NAMES = ('hst-vtab', 'hst-fgvc', 'hst-coco', 'hst-ade20k', 'polyhistor-pascal')
VTAB_GROUP_LABELS = {'natural': 'Natural', 'specialized': 'Specialized', 'structured': 'Structured'}


def load_tables(path: str = TABLES_FILE) -> dict:
    """The paper tables (``paper_tables.json``): ``{table name: table}``."""
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def vtab_groups() -> Dict[str, tuple]:
    """VTAB-1k's groups, ``{group: task keys}`` (mmpeft's ``VTAB1K_GROUPS``)."""
    from mmpeft.datasets.vtab1k import VTAB1K_GROUPS
    return dict(VTAB1K_GROUPS)


def mean(values: List[Optional[float]]) -> Optional[float]:
    """Mean, or None when any value is missing (a partial mean would not compare with the paper's)."""
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def delta_m(values: Dict[str, Optional[float]], baseline: Dict[str, float]) -> Optional[float]:
    """Polyhistor's delta_up (%): mean over semseg, parts, sal, normals of s (M - B) / B * 100, s = -1
    for normals (lower is better), else +1. None when a task is missing."""
    gains = []
    for task in ('semseg', 'parts', 'sal', 'normals'):
        if values.get(task) is None:
            return None
        sign = -1.0 if task == 'normals' else 1.0
        gains.append(sign * (values[task] - baseline[task]) / baseline[task] * 100.0)
    return sum(gains) / len(gains)


def read_metrics(path: str) -> Optional[dict]:
    """A ``test_metrics.json``, or None when there is none. A file that is not JSON is an error naming it."""
    if not osp.isfile(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f'{path} is not JSON ({e}); rerun tools/test.py --out {path}') from None


def method_keys(table: dict) -> List[str]:
    keys = []
    for e in table['entries']:
        if e['method_key'] not in keys:
            keys.append(e['method_key'])
    return keys


def work_dir_name(tables: dict, table: dict, method: str, setting: str, column: dict,
                  template: Optional[str] = None) -> str:
    """The work dir name (under the root) holding our result for one cell."""
    if template is None:
        template = table.get('work_dir_overrides', {}).get(method, {}).get(setting, table['work_dirs'][setting])
    if isinstance(template, dict):  # one work dir per column
        template = template[column['key']]
    config_method = tables.get('config_method', {}).get(method, method)
    return template.format(config_method=config_method, slug=column.get('slug', ''), setting=setting)


def our_value(root: str, name: str, column: dict) -> Optional[float]:
    metrics = read_metrics(osp.join(root, name, column.get('file', 'test_metrics.json')))
    if metrics is None or column['metric'] not in metrics:
        return None
    value = metrics[column['metric']]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value) * column.get('scale', 1.0)


def build_rows(tables: dict, table_name: str, root: str, method: Optional[str] = None,
               template: Optional[str] = None) -> dict:
    """The table to print: ``{'header': [...], 'rows': [[...], ...], 'source': str}``; numbers as floats
    or None (printed '-'). Rows come in threes per setting: paper, ours, ours - paper."""
    if table_name not in TABLE_NAMES:
        raise ValueError(f'unknown table {table_name!r}; choose one of {", ".join(TABLE_NAMES)}')
    table = tables[table_name]
    method = method or table['default_method']
    if method not in method_keys(table):
        raise ValueError(f'{table_name} has no method {method!r}; its methods: {", ".join(method_keys(table))}')
    columns = [c for c in table['columns'] if 'derived' not in c]
    derived = [c for c in table['columns'] if 'derived' in c]
    labels = [c['label'] for c in columns]
    groups = vtab_groups() if table_name == 'hst-vtab' else {}
    extra = [f'{VTAB_GROUP_LABELS[g]} mean' for g in groups] + (['Mean (19 tasks)'] if groups else [])
    extra += [c['label'] for c in derived]
    header = ['Setting', 'Row'] + labels + extra
    baseline = None
    if 'delta_m_baseline' in table:
        baseline = next(e['values'] for e in table['entries'] if e['method_key'] == table['delta_m_baseline'])

    def derived_values(values: Dict[str, Optional[float]], paper_entry: Optional[dict]) -> list:
        out = [mean([values.get(t) for t in tasks]) for tasks in groups.values()]
        if groups:  # the paper's row: its printed Average (the 19-task mean, rounded as printed)
            out.append(paper_entry['average'] if paper_entry is not None else mean([values.get(c['key'])
                                                                                    for c in columns]))
        for c in derived:
            if paper_entry is not None:
                out.append(paper_entry['values'].get(c['key']))
            else:
                out.append(delta_m(values, baseline))
        return out

    rows = []
    settings = {s['key']: s['label'] for s in table['settings']}
    for entry in [e for e in table['entries'] if e['method_key'] == method]:
        setting = entry['setting']
        label = f"{settings[setting]}: {entry['method']}"
        if entry.get('params_m') is not None:
            label += f" ({entry['params_m']}M)"
        paper = {c['key']: entry['values'].get(c['key']) for c in columns}
        ours = {c['key']: our_value(root, work_dir_name(tables, table, method, setting, c, template), c)
                for c in columns}
        paper_row = [paper[c['key']] for c in columns] + derived_values(paper, entry)
        ours_row = [ours[c['key']] for c in columns] + derived_values(ours, None)
        diff = [None if p is None or o is None else o - p for p, o in zip(paper_row, ours_row)]
        rows += [[label, 'paper'] + paper_row, ['', 'ours'] + ours_row, ['', 'ours - paper'] + diff]
    return dict(header=header, rows=rows, source=table['source'])


def to_markdown(result: dict) -> str:
    def cell(v) -> str:
        if v is None:
            return '-'
        if isinstance(v, float):
            return f'{v:.2f}'
        return str(v)
    lines = ['| ' + ' | '.join(result['header']) + ' |', '|' + '---|' * len(result['header'])]
    lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in result['rows']]
    return '\n'.join(lines) + f"\n\nPaper: {result['source']}."


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Our results beside the HST / Polyhistor papers\' tables (markdown)')
    p.add_argument('table', choices=TABLE_NAMES)
    p.add_argument('work_dir_root', help='folder of the work dirs (sweep.sh: WORK_ROOT, default work_dirs)')
    p.add_argument('--method', help="the method's key (default: the paper's own method); 'list' lists them")
    p.add_argument('--work-dir-template', help='work dir name for every setting, with {slug} and {setting}, '
                                               'e.g. "my-vit-b_hst_vtab1k-{slug}"')
    p.add_argument('--tables', default=TABLES_FILE, help='the paper tables (default: paper_tables.json here)')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    tables = load_tables(args.tables)
    if args.method == 'list':
        print('\n'.join(method_keys(tables[args.table])))
        return
    if not osp.isdir(args.work_dir_root):
        print(f'warning: {args.work_dir_root} is not a folder; every "ours" cell is "-"', file=sys.stderr)
    print(to_markdown(build_rows(tables, args.table, args.work_dir_root, args.method, args.work_dir_template)))


if __name__ == '__main__':
    main()
