"""The built-in main job (tools/demo/run_demo.py), shrunk to a few iterations, end to end."""
import os.path as osp
import subprocess
import sys

import numpy as np
from PIL import Image

from mmpeft_testing import ROOT


def test_demo_pretrains_adapts_compares_and_draws(tmp_path):
    work, data = tmp_path / 'demo', tmp_path / 'data'
    cmd = [sys.executable, 'tools/demo/run_demo.py', '--work-dir', str(work), '--data-dir', str(data),
           '--iters', '3', '--pretrain-iters', '3', '--num-vis', '2']
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = (work / 'results.md').read_text().splitlines()
    rows = {r.split('|')[1].strip(): [c.strip() for c in r.split('|')[2:-1]] for r in table[2:]}
    assert set(rows) == {'Polyhistor-Lite', 'Decoders only', 'MT full fine-tuning'}
    enc = {k: float(v[0].split('/')[0]) for k, v in rows.items()}
    assert enc['Decoders only'] == 0.0 < enc['Polyhistor-Lite'] < enc['MT full fine-tuning']
    # delta_m of the reference row against itself
    assert rows['MT full fine-tuning'][-1] == '+0.00'
    for cells in rows.values():
        for c in cells[2:6]:
            assert 0.0 <= float(c) <= 180.0
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
