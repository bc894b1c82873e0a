"""The built-in main job (tools/demo/run_demo.py), shrunk to a few iterations, end to end.

Expected values: the short run (3 pretraining, 3 adaptation iterations, one CPU thread) is repeatable
bit for bit; with 2 threads its metrics move by at most 0.0013, so they are pinned to 0.005 (the
multi-task model with PolyhistorSwin, decoders only and full fine-tuning, through tools/train.py and
tools/test.py). Re-measure, after a change meant to alter them, by running this test with ``-s``: it
prints each method's ``test_metrics.json``.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmpeft_testing import ROOT

# measured once with OMP_NUM_THREADS=1 (semseg mIoU, parts mIoU, sal maxIoU, normals mean error)
EXPECTED = {
    'polyhistor-lite': (0.384726, 2.349062, 9.899343, 85.800432),
    'decoders-only': (0.153691, 0.701793, 13.009443, 49.961803),
    'mt-full-ft': (0.160935, 0.691075, 12.529098, 30.254539),
}
PINNED = ('semseg/mIoU', 'parts/mIoU', 'sal/maxIoU', 'normals/mean')


def test_demo_pretrains_adapts_compares_and_draws(tmp_path):
    work, data = tmp_path / 'demo', tmp_path / 'data'
    cmd = [sys.executable, 'tools/demo/run_demo.py', '--work-dir', str(work), '--data-dir', str(data),
           '--iters', '3', '--pretrain-iters', '3', '--num-vis', '2']
    env = dict(os.environ, OMP_NUM_THREADS='1')  # the pinned numbers are one thread's
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    measured = {}
    for slug in EXPECTED:
        with open(work / slug / 'test_metrics.json') as f:
            measured[slug] = json.load(f)
        print(slug, measured[slug])  # all printed before any check, for re-measuring
    for slug, expected in EXPECTED.items():
        got = tuple(measured[slug][k] for k in PINNED)
        assert got == pytest.approx(expected, abs=0.005), (
            f'{slug}: {dict(zip(PINNED, got))} where {dict(zip(PINNED, expected))} was measured; a change '
            f'in the data, the model, the losses or the metric changed them (re-measure only if that was meant)')
    table = (work / 'results.md').read_text().splitlines()
    rows = {r.split('|')[1].strip(): [c.strip() for c in r.split('|')[2:-1]] for r in table[2:]}
    assert set(rows) == {'Polyhistor-Lite', 'Decoders only', 'MT full fine-tuning'}
    enc = {k: float(v[0].split('/')[0]) for k, v in rows.items()}
    assert enc['Decoders only'] == 0.0 < enc['Polyhistor-Lite'] < enc['MT full fine-tuning']
    # delta_m of the reference row against itself
    assert rows['MT full fine-tuning'][-1] == '+0.00'
    # the table shows the same numbers, rounded
    for name, slug in (('Polyhistor-Lite', 'polyhistor-lite'), ('Decoders only', 'decoders-only'),
                       ('MT full fine-tuning', 'mt-full-ft')):
        assert [float(c) for c in rows[name][2:6]] == pytest.approx(EXPECTED[slug], abs=0.011), name
    # Polyhistor-Lite writes delta checkpoints: far smaller than full fine-tuning's
    assert float(rows['Polyhistor-Lite'][1]) < 0.5 * float(rows['MT full fine-tuning'][1])
    # data went where asked, not into the repository
    assert (data / 'synthetic_pascal_mt' / 'JPEGImages').is_dir()
    assert (data / 'synthetic_pascal_mt_pretrain' / 'JPEGImages').is_dir()
    assert (work / 'pretrain' / 'pretrained_swin-tiny.pth').is_file()
    grid = np.array(Image.open(work / 'vis' / 'grid.png'))
    # 2 rows of 9 tiles (input + gt/pred for 4 tasks) of 64x64 images magnified 3x, plus a title bar
    assert grid.shape[0] == 14 + 2 * 64 * 3 and grid.shape[1] == 9 * 66 * 3
    assert len(list((work / 'vis').glob('*.png'))) == 3
    # a second run reuses the cached pretraining (and a changed setting does not)
    import importlib.util
    spec = importlib.util.spec_from_file_location('run_demo', osp.join(ROOT, 'tools', 'demo', 'run_demo.py'))
    run_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_demo)
    weights = work / 'pretrain' / 'pretrained_swin-tiny.pth'
    mtime = weights.stat().st_mtime_ns
    assert run_demo.pretrain(str(work), 3, str(data)) == str(weights)
    assert weights.stat().st_mtime_ns == mtime
    key = (work / 'pretrain' / 'pretrained_swin-tiny.pth.key').read_text()
    assert key != run_demo.cache_key(4, str(data))
