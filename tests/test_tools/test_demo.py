"""The built-in main job (tools/demo/run_demo.py), shrunk to a few iterations, end to end.

Expected values: the short run (3 pretraining, 3 adaptation iterations, one CPU thread) is repeatable
bit for bit; with 2 threads its metrics move by at most 0.0013, so they are pinned to 0.005 (the
multi-task model with PolyhistorSwin, decoders only and full fine-tuning, through tools/train.py and
tools/test.py). Re-measure, after a change meant to alter them, by running this test with ``-s``: it
prints each method's ``test_metrics.json``.

Also checked: the demo prints one short line per phase (the tools' output goes to ``*.log`` files in
the work dirs), exports Polyhistor-Lite as an adapter (``adapter.safetensors`` + ``adapter_config.json``)
and draws its PNGs from the re-loaded adapter: the PNGs equal those of the trained checkpoint, and the
re-loaded model's outputs equal the checkpoint model's.
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
    'polyhistor-lite': (0.423802, 1.664903, 10.37679, 82.571598),
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
    # one short line per phase; mmengine's hook tables and iteration logs stay in the work dirs' logs
    phases = [ln for ln in res.stdout.splitlines() if ln.startswith('[')]
    assert len(phases) == 1 + 1 + 3 + 1 + 1, res.stdout  # start, pretrain, 3 methods, export, PNGs
    assert 'RuntimeInfoHook' not in res.stdout + res.stderr and 'Iter(train)' not in res.stdout + res.stderr
    for slug in ('pretrain/run', 'polyhistor-lite', 'decoders-only', 'mt-full-ft'):
        log = (work / slug / 'train.log').read_text()
        assert 'RuntimeInfoHook' in log and 'Saving checkpoint at 3 iterations' in log, slug
    for slug in ('polyhistor-lite', 'decoders-only', 'mt-full-ft'):
        assert 'Iter(test)' in (work / slug / 'test.log').read_text(), slug
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
    check_adapter(work, data, rows)
    if (os.cpu_count() or 1) > 1:  # --jobs defaults to one per core: Lite and decoders only train side by side
        starts = {slug: sorted(p.name for p in (work / slug).iterdir() if p.name[:8].isdigit())
                  for slug in ('polyhistor-lite', 'decoders-only')}  # mmengine's run folders: train, test
        assert starts['decoders-only'][0] < starts['polyhistor-lite'][1], starts
    # a second run reuses the cached pretraining (and a changed setting does not)
    run_demo = _run_demo_module()
    weights = work / 'pretrain' / 'pretrained_swin-tiny.pth'
    mtime = weights.stat().st_mtime_ns
    assert run_demo.pretrain(str(work), 3, str(data)) == str(weights)
    assert weights.stat().st_mtime_ns == mtime
    key = (work / 'pretrain' / 'pretrained_swin-tiny.pth.key').read_text()
    assert key != run_demo.cache_key(4, str(data))


def _run_demo_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location('run_demo', osp.join(ROOT, 'tools', 'demo', 'run_demo.py'))
    run_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_demo)
    return run_demo


def test_demo_jobs_share_the_cores(monkeypatch):
    run_demo = _run_demo_module()
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setattr(run_demo, 'cores', lambda: 16)
    assert run_demo.job_env(3)['OMP_NUM_THREADS'] == '5'
    assert run_demo.job_env(32)['OMP_NUM_THREADS'] == '1'
    assert 'OMP_NUM_THREADS' not in run_demo.job_env(1)  # one run at a time: torch's own default
    monkeypatch.setenv('OMP_NUM_THREADS', '2')  # the user's setting wins
    assert run_demo.job_env(3)['OMP_NUM_THREADS'] == '2'


def test_side_by_side_keeps_order_and_stops_after_a_failure():
    import threading
    import time
    run_demo = _run_demo_module()
    started, lock = [], threading.Lock()

    def fn(i):
        with lock:
            started.append(i)
        time.sleep(0.3 if i == 0 else 0.05)  # the first finishes last
        if i == 'bad':
            raise SystemExit('run failed')  # what run() raises for a failing tool
        return i * 10

    assert run_demo.side_by_side(fn, [0, 1, 2, 3], 2) == [0, 10, 20, 30]
    assert sorted(started) == [0, 1, 2, 3]
    # one at a time: a failure leaves the later items unstarted and is raised
    started.clear()
    with pytest.raises(SystemExit, match='run failed'):
        run_demo.side_by_side(fn, [1, 'bad', 2, 3], 1)
    assert started == [1, 'bad']
    # two at a time: the one running beside the failure finishes, nothing new starts
    started.clear()
    with pytest.raises(SystemExit, match='run failed'):
        run_demo.side_by_side(fn, ['bad', 0, 2, 3], 2)
    assert started == ['bad', 0]


def check_adapter(work, data, rows):
    """The exported adapter: its files, its size, and a re-loaded model that reproduces Lite's."""
    import torch
    from mmengine.config import Config
    from safetensors.torch import load_file

    from mmpeft.utils.adapter_io import load_adapter
    sys.path.insert(0, osp.join(ROOT, 'tools', 'demo'))
    import visualize_predictions as vp
    lite = work / 'polyhistor-lite'
    adapter = lite / 'adapter'
    assert (adapter / 'adapter.safetensors').is_file() and (adapter / 'adapter_config.json').is_file()
    config = json.loads((adapter / 'adapter_config.json').read_text())
    tensors = load_file(str(adapter / 'adapter.safetensors'))
    # what trained is what was exported: the table's "All trainable" count (0.01 M rounding), float32
    n = sum(t.numel() for k, t in tensors.items() if k in config['trainable'])
    assert n == config['trainable_count'] and abs(n / 1e6 - float(rows['Polyhistor-Lite'][0].split('/')[1])) <= 0.005
    # float32 weights; the decoders' BatchNorm counters (num_batches_tracked) are int64
    assert {str(t.dtype) for k, t in tensors.items() if not k.endswith('num_batches_tracked')} == {'torch.float32'}
    nbytes = sum(4 * t.numel() if t.dtype == torch.float32 else 8 * t.numel() for t in tensors.values())
    # safetensors: the raw values plus a JSON header (names, shapes, offsets) of well under 64 kB
    assert nbytes < (adapter / 'adapter.safetensors').stat().st_size < nbytes + 2 ** 16
    # only the method, the backbone norms and the decoders: no frozen Swin weight
    assert not [k for k in tensors if k.endswith(('attn.w_msa.qkv.weight', 'ffn.layers.0.0.weight'))]

    # the model of the config with the delta checkpoint (as tools/test.py) vs pretrained base + adapter
    cfg = Config.fromfile(osp.join(ROOT, 'configs/demo/polyhistor-lite_swin-tiny_synthetic-mt-64x64.py'))
    cfg.merge_from_dict({'model.backbone.init_cfg.checkpoint': str(work / 'pretrain' / 'pretrained_swin-tiny.pth'),
                         'val_dataloader.dataset.data_root': str(data / 'synthetic_pascal_mt')})
    ckpt = (lite / 'last_checkpoint').read_text().strip()
    trained = vp.build_model(cfg, checkpoint=ckpt)
    reloaded = vp.build_model(cfg, adapter=str(adapter))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = trained.backbone.peft.forward_tasks(x, list(cfg.tasks))
        b = reloaded.backbone.peft.forward_tasks(x, list(cfg.tasks))
    for task in cfg.tasks:
        for fa, fb in zip(a[task], b[task]):
            assert torch.equal(fa, fb), task
    sd_a, sd_b = trained.state_dict(), reloaded.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    # the demo's PNGs (drawn from the adapter) are those of the trained checkpoint
    tasks = list(cfg.model.tasks)
    for row in vp.predict_rows(cfg, ckpt, 2, 'val'):
        png = np.array(Image.open(work / 'vis' / f"{row['img_id']}.png"))
        assert np.array_equal(png, vp.compose(row, tasks)), row['img_id']
    load_adapter(reloaded, str(adapter))  # loading twice is harmless and still checks the base hash
