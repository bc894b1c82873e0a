"""Markdown tables for ``benchmarks/device/run.sh``: one file per benchmark, from its ``--json`` output (or,
for ``merge_speed.py``, which has no ``--json``, from the markdown table it prints), plus ``env.md`` and
``timings.md``.

    python benchmarks/device/tables.py KIND SOURCE OUT.md [--title TEXT]

KIND SOURCE:
    hst_efficiency JSON      hst_efficiency.py --json: GFLOPs, inference, training tables (rows x columns)
    hst_speed_memory JSON    hst_speed_memory.py --json: training (mode x metric) and inference tables
    polyhistor_batched JSON  polyhistor_batched.py --json: one row per variant (batched, sequential) + ratios
    merge_speed LOG          merge_speed.py stdout: its printed ``| variant | ...`` table, copied
    env LOG                  tools/collect_env.py stdout: ``key: value`` lines as a two-column table
    timings TSV              ``step<TAB>seconds<TAB>status`` lines written by run.sh
"""
import argparse
import datetime
import json
import os
import platform
import sys
from typing import Any, Dict, List, Mapping, Sequence


class TableError(ValueError):
    """The source holds no data for a table; the message names the file and what was expected."""


def _cell(value: Any) -> str:
    """One table cell: floats to 4 significant digits, None as '-'."""
    if value is None:
        return '-'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, float):
        return f'{value:.4g}'
    return str(value).replace('|', '\\|').replace('\n', ' ')


def table(rows: Mapping[str, Mapping[str, Any]], first: str = 'row') -> List[str]:
    """Markdown lines of ``rows`` ({row name: {column: scalar}}); columns in order of first appearance,
    non-scalar values (nested dicts, lists) left out. Returns [] when there is no row."""
    cols: List[str] = []
    for values in rows.values():
        for k, v in values.items():
            if not isinstance(v, (dict, list, tuple)) and k not in cols:
                cols.append(k)
    if not rows:
        return []
    lines = ['| ' + ' | '.join([first] + cols) + ' |', '| ' + ' | '.join(['---'] + ['---:'] * len(cols)) + ' |']
    for name, values in rows.items():
        lines.append('| ' + ' | '.join([_cell(name)] + [_cell(values.get(c)) for c in cols]) + ' |')
    return lines


def _section(title: str, lines: Sequence[str]) -> List[str]:
    return [f'## {title}', '', *lines, ''] if lines else []


def hst_efficiency(data: Dict[str, Any]) -> List[str]:
    out: List[str] = []
    out += _section('GFLOPs (multiply-accumulates, batch 1)', table(data.get('flops', {})))
    out += _section('Inference (images / s, ratio to full)', table(data.get('infer', {})))
    out += _section('Training step and memory', table(data.get('train', {})))
    targets = {k: (v if not isinstance(v, dict) else ', '.join(f'bs={b}: {_cell(r)}' for b, r in v.items()))
               for k, v in data.get('targets', {}).items()}
    out += _section('Targets', table({k: {'value': v} for k, v in targets.items()}, first='target'))
    return out


def hst_speed_memory(data: Dict[str, Any]) -> List[str]:
    results = data.get('results', {})
    out: List[str] = []
    model = data.get('model', 'Mask R-CNN')  # the model hst_speed_memory.py trained (--task)
    out += _section(f'Training step ({model}) and memory', table(results.get('train', {}), first='mode'))
    out += _section('Inference', table(results.get('infer', {}), first='model'))
    return out


def polyhistor_batched(data: Dict[str, Any]) -> List[str]:
    rows = {
        'batched': {'s / step': data.get('batched_s'), 'GFLOP': data.get('batched_gflop'),
                    'peak MiB': data.get('batched_peak_mib')},
        'sequential': {'s / step': data.get('sequential_s'), 'GFLOP': data.get('sequential_gflop'),
                       'peak MiB': data.get('sequential_peak_mib')},
    }
    ratios = {k: {'value': data.get(k)} for k in ('speedup', 'speedup_of_fastest', 'flop_ratio', 'memory_ratio')
              if k in data}
    setting = (f"{data.get('config')}, {data.get('step')} step, B={data.get('batch_size')} "
               f"T={data.get('tasks')} {data.get('size')}x{data.get('size')}, {data.get('device')}")
    return [setting, ''] + _section('Batched vs sequential', table(rows, first='variant')) \
        + _section('Ratios (sequential / batched; memory batched / sequential)', table(ratios, first='ratio'))


def merge_speed(text: str) -> List[str]:
    lines = [ln.strip() for ln in text.splitlines()]
    tab = [ln for ln in lines if ln.startswith('|')]
    setting = [ln for ln in lines if ', batch ' in ln and ' rounds ' in ln]
    diffs = [ln for ln in lines if 'merged vs unmerged max abs difference' in ln]
    return setting[:1] + [''] + tab + [''] + [f'- {d}' for d in diffs]


def env(text: str) -> List[str]:
    rows: Dict[str, Dict[str, Any]] = {}
    for ln in text.splitlines():
        key, sep, value = ln.partition(': ')
        # collect_env's lines are "Key: value"; logger lines and the long build-details block are skipped
        if sep and key and len(key) < 40 and not key[0].isdigit() and not ln.startswith(' ') \
                and 'compiling details' not in key:
            rows[key.strip()] = {'value': value.strip()}
    return table(rows, first='item')


def timings(text: str) -> List[str]:
    rows: Dict[str, Dict[str, Any]] = {}
    for ln in text.splitlines():
        if not ln.strip():
            continue
        step, seconds, status = (ln.split('\t') + ['', ''])[:3]
        rows[step] = {'seconds': float(seconds) if seconds else None, 'status': status}
    return table(rows, first='step')


def data_rows(lines: Sequence[str]) -> int:
    """How many table rows of ``lines`` are data: ``|`` lines that are neither a separator (``| --- |``) nor
    the header just above one."""
    is_sep = [ln.startswith('|') and set(ln.replace(' ', '')) <= set('|-:') for ln in lines]
    n = 0
    for i, ln in enumerate(lines):
        header = i + 1 < len(lines) and is_sep[i + 1]
        n += ln.startswith('|') and not is_sep[i] and not header
    return n


KINDS = {'hst_efficiency': (hst_efficiency, True), 'hst_speed_memory': (hst_speed_memory, True),
         'polyhistor_batched': (polyhistor_batched, True), 'merge_speed': (merge_speed, False),
         'env': (env, False), 'timings': (timings, False)}


def render(kind: str, source: str, title: str) -> str:
    """The markdown text of ``kind`` from the file ``source``.

    Raises:
        TableError: ``source`` yields no table row (the benchmark failed or printed nothing usable).
    """
    fn, is_json = KINDS[kind]
    with open(source) as f:
        body = fn(json.load(f)) if is_json else fn(f.read())
    if data_rows(body) == 0:
        raise TableError(f'{source}: no table rows for {kind} (expected the output of that benchmark); '
                         'see its log next to it in the output folder')
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    machine = os.environ.get('MMPEFT_BENCH_MACHINE') or f'host {platform.node()}'
    return '\n'.join([f'# {title}', '', f'{stamp}; {machine}', '', *body]).rstrip() + '\n'


def main(argv: Sequence[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('kind', choices=list(KINDS))
    p.add_argument('source', help='the JSON / log / TSV file to read')
    p.add_argument('out', help='the markdown file to write')
    p.add_argument('--title', default=None, help='heading of the file (default: KIND)')
    args = p.parse_args(argv)
    try:
        text = render(args.kind, args.source, args.title or args.kind)
    except (OSError, ValueError) as e:  # json.JSONDecodeError and TableError are ValueErrors
        print(f'[tables] cannot write {args.out}: {e}', file=sys.stderr)
        return 1
    with open(args.out, 'w') as f:
        f.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
