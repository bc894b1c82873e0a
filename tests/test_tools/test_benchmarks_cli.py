"""benchmarks/*.py as a user runs them: ``--help``, and a ``--toy`` run printing the ratio lines.

A benchmark's numbers cannot be pinned, but its output can: every promised line is printed, every
ratio is a positive finite number, the baseline's own ratio is 1, and each ratio is the quotient of
the two measurements printed beside it (so both sides were measured, and the right ones divided).
"""
import math
import os
import os.path as osp
import re
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest

from mmpeft_testing import run_as_main

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPTS = ('hst_speed_memory', 'merge_speed', 'polyhistor_batched')
HELP_OPTIONS = {'hst_speed_memory': ['--size', '--infer-batches', '--infer-scope', '--modes', '--toy'],
                'merge_speed': ['--model', '--methods', '--repeats', '--toy'],
                'polyhistor_batched': ['--config', '--batch-size', '--iters', '--step', '--toy']}
NUM = r'(-?[0-9.]+(?:e[-+]?\d+)?|nan|inf)'


def _help(name: str) -> Tuple[int, str, str]:
    """``python benchmarks/NAME.py --help`` run as ``__main__`` here: (exit code, stdout, stderr)."""
    res = run_as_main(osp.join('benchmarks', f'{name}.py'), '--help')
    return res.returncode, res.stdout, res.stderr


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> Dict[Tuple[str, str], Tuple[int, str, str]]:
    """``{(script, 'help' | 'toy'): (exit code, stdout, stderr)}``. The three toy runs are started
    together as processes (each mostly imports the toolboxes, so side by side they take about half
    the time; output goes to files, as pipes could fill up and stall a process while another is
    read); ``--help`` runs as ``__main__`` in this process (argparse exits before any measurement)."""
    out_dir = tmp_path_factory.mktemp('bench')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    procs = {}
    for name in SCRIPTS:
        files = [open(out_dir / f'{name}.toy.{s}', 'w+') for s in ('out', 'err')]
        cmd = [sys.executable, osp.join('benchmarks', f'{name}.py'), '--toy', '--threads', '1', '--device', 'cpu']
        procs[name, 'toy'] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=files[0], stderr=files[1]), files)
    results = {(name, 'help'): _help(name) for name in SCRIPTS}
    for key, (proc, files) in procs.items():
        rc = proc.wait(timeout=900)
        texts = []
        for f in files:
            f.seek(0)
            texts.append(f.read())
            f.close()
        results[key] = (rc, *texts)
    return results


def _ok(runs, name: str, kind: str) -> str:
    rc, out, err = runs[name, kind]
    assert rc == 0, f'benchmarks/{name}.py {kind} exited {rc}:\n{err[-3000:]}'
    return out


def _positive(text: str) -> float:
    v = float(text)
    assert math.isfinite(v) and v > 0, text
    return v


def _is_quotient(ratio: float, ratio_digits: int, num: float, den: float, digits: int) -> bool:
    """Whether the printed ``ratio`` is ``num / den`` for some values that round to the printed ones."""
    h, hr = 0.5 * 10 ** -digits, 0.5 * 10 ** -ratio_digits
    lo = (num - h) / (den + h)
    hi = (num + h) / (den - h) if den > h else math.inf
    return lo - hr <= ratio <= hi + hr


def _table(out: str, first_col: str) -> Dict[str, List[str]]:
    """The rows of the markdown table whose header starts with ``| first_col |``: {first cell: cells}."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f'| {first_col} |'))
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith('|'):
            break
        cells = [c.strip() for c in ln.strip('|').split('|')]
        rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize('name', SCRIPTS)
def test_help_lists_the_options(runs, name):
    out = _ok(runs, name, 'help')
    assert out.startswith('usage:')
    for opt in HELP_OPTIONS[name]:
        assert opt in out, f'{name} --help does not mention {opt}'


def test_merge_speed_toy(runs):
    out = _ok(runs, 'merge_speed', 'toy')
    for method in ('LoRA', 'SSF'):  # the merged model reproduces the unmerged one
        diff = re.search(rf'^{method}: merged vs unmerged max abs difference {NUM}$', out, re.M)
        assert diff and float(diff.group(1)) < 1e-4, out
    rows = _table(out, 'variant')
    assert set(rows) == {'plain', 'LoRA unmerged', 'LoRA merged', 'SSF unmerged', 'SSF merged'}
    plain_med, plain_min = (_positive(v) for v in rows['plain'][:2])
    for variant, cells in rows.items():
        med, lo, med_ratio, min_ratio = (_positive(c) for c in cells)
        assert _is_quotient(med_ratio, 3, med, plain_med, 1), (variant, cells)
        assert _is_quotient(min_ratio, 3, lo, plain_min, 1), (variant, cells)
    assert rows['plain'][2:] == ['1.000', '1.000']


def test_polyhistor_batched_toy(runs):
    out = _ok(runs, 'polyhistor_batched', 'toy')
    step = re.search(rf'step time: batched {NUM}s, (\d+) sequential passes {NUM}s -> batched is {NUM}x '
                     rf'faster \(fastest steps: {NUM}x\)', out)
    assert step, out
    tb, tasks, ts, speedup, fastest = step.groups()
    assert int(tasks) == 4  # the demo config's four tasks
    _positive(fastest)
    assert _is_quotient(_positive(speedup), 2, _positive(ts), _positive(tb), 3)
    flops = re.search(rf'arithmetic: batched {NUM} GFLOP, sequential {NUM} GFLOP -> ratio sequential / '
                      rf'batched {NUM}', out)
    assert flops, out
    fb, fs, ratio = (_positive(v) for v in flops.groups())
    # the batched pass repeats the images: the same arithmetic, up to the generation of the adapter
    # weights (T tasks at once vs one at a time: another einsum contraction order)
    assert abs(ratio - 1) <= 0.02 and _is_quotient(ratio, 3, fs, fb, 1)
    cpu = re.search(rf'processor time: batched {NUM} s, sequential {NUM} s per step .* -> ratio {NUM}', out)
    assert cpu, out
    cb, cs, ratio = cpu.groups()
    assert _is_quotient(_positive(ratio), 2, float(cs), float(cb), 2)
    mem = re.search(rf'peak memory: batched {NUM} MiB, sequential {NUM} MiB -> ratio batched / '
                    rf'sequential {NUM}', out)
    assert mem, out
    mb, ms, ratio = mem.groups()
    assert _is_quotient(_positive(ratio), 2, _positive(mb), _positive(ms), 0)


def test_hst_speed_memory_toy(runs):
    out = _ok(runs, 'hst_speed_memory', 'toy')
    assert 'ViT-B/16 with 4 layers' in out
    train = _table(out, 'method')
    assert set(train) == {'hst', 'full-ft'}
    # columns: trainable (M), s / step, peak RSS, memory rise, time / full-ft, memory / full-ft
    hst, full = ([_positive(c) for c in train[k]] for k in ('hst', 'full-ft'))
    assert hst[0] < full[0]  # HST trains a side network, full fine-tuning the whole ViT as well
    assert train['full-ft'][4:] == ['1.00', '1.00']
    assert _is_quotient(hst[4], 2, hst[1], full[1], 2)
    assert _is_quotient(hst[5], 2, hst[3], full[3], 0)
    assert '## Inference' in out
    infer = _table(out, 'model')
    assert set(infer) == {'full', 'hst'}
    (full_ips, full_ratio), (hst_ips, hst_ratio) = ([_positive(c) for c in infer[k]] for k in ('full', 'hst'))
    assert infer['full'][1] == '1.00'
    assert _is_quotient(hst_ratio, 2, hst_ips, full_ips, 2)


def test_hst_speed_memory_seg_needs_two_images():
    res = run_as_main(osp.join('benchmarks', 'hst_speed_memory.py'), '--task', 'seg', '--batch', '1')
    assert res.returncode == 2 and '--batch 1 with --task seg' in res.stderr and '2 images' in res.stderr
