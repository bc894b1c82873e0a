"""benchmarks/checkpoint_memory.py (issue #11): its saved-bytes counter against bytes counted by hand,
and a ``--tiny`` run of ``main`` whose rows show checkpointing keeping fewer bytes.
"""
import importlib.util
import json
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

from mmpeft_testing import ROOT, run_as_main

SCRIPT = osp.join('benchmarks', 'checkpoint_memory.py')


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('checkpoint_memory_under_test', osp.join(ROOT, SCRIPT))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_counter_counts_saved_activations_by_hand(bench):
    # Linear(8, 32) - GELU - Linear(32, 8) on x (4, 8), float32, x not requiring grad:
    #   linear 1 keeps its input x          4 * 8 * 4  = 128 bytes
    #   GELU keeps its input (4, 32)        4 * 32 * 4 = 512
    #   linear 2 keeps its input (4, 32)    4 * 32 * 4 = 512   (GELU's output)
    # weights and biases are parameters, not counted; total 1152.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))
    x = torch.randn(4, 8)
    counter = bench.SavedTensorCounter(net)
    with counter:
        y = net(x)
    assert counter.nbytes() == 1152
    # checkpointed: only the input of the checkpointed call is kept (128 bytes)
    counter = bench.SavedTensorCounter(net)
    with counter:
        y = cp.checkpoint(net, x, use_reentrant=False)
    assert counter.nbytes() == 128
    # a view of a kept storage is not counted twice: the whole (4, 8) storage, once
    counter = bench.SavedTensorCounter(net)
    with counter:
        y = net[0](x[:2]) + net[0](x[2:])
    assert counter.nbytes() == 128
    del y


def test_unknown_model_is_an_error_naming_the_choices():
    res = run_as_main(SCRIPT, '--models', 'swin,vitb')
    assert res.returncode == 2
    assert "'vitb'" in res.stderr and 'vitl' in res.stderr, res.stderr


def test_tiny_run_keeps_fewer_bytes_with_checkpointing(bench, tmp_path, capsys):
    out = tmp_path / 'cp.json'
    rows = bench.main(['--tiny', '--device', 'cpu', '--threads', '1', '--json', str(out)])
    assert [r['model'] for r in rows] == ['swin', 'lora-swin', 'vitl']
    for r in rows:
        assert 0 < r['saved_mb_with'] < r['saved_mb_without'], r
        assert r['saved_ratio'] == pytest.approx(r['saved_mb_with'] / r['saved_mb_without'], rel=1e-12)
        # same weights, same batch, same drop-path masks: checkpointing changes no value
        assert r['loss_with'] == pytest.approx(r['loss_without'], rel=1e-6)
        assert r['grad_norm_without'] > 0
        assert r['grad_norm_with'] == pytest.approx(r['grad_norm_without'], rel=1e-5)
    assert json.loads(out.read_text())['rows'] == rows
    text = capsys.readouterr().out
    assert '| model | input | batch | saved MB without | saved MB with | ratio |' in text
    for r in rows:
        cells = f"{r['saved_mb_without']:.1f} | {r['saved_mb_with']:.1f} | {r['saved_ratio']:.3f}"
        assert f'| 64x64 | 1 | {cells} |' in text
