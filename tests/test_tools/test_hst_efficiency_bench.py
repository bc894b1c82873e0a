"""benchmarks/hst_efficiency.py (HST Table 9 / Figure 7 row by row): its command line, the consistency
of the ratios it writes, and its FLOP counts against numbers derived by hand for tiny ViTs.

A benchmark's timings cannot be pinned, but what it derives from them can: every asked row is there,
full fine-tuning's ratio is 1, every other ratio is that row's value over full's, and images / s is
the batch over the median seconds. The FLOP counts can be pinned exactly: a plain ViT's arithmetic is
a closed formula (below), and so is what VPT-deep, LoRA and AdaptFormer add to it.
"""
import importlib.util
import json
import os.path as osp

import pytest
import torch

from mmpeft_testing import ROOT, run_as_main

SCRIPT = osp.join('benchmarks', 'hst_efficiency.py')
TOY_ROWS = ['full', 'lora', 'hst-serial']


@pytest.fixture(scope='module')
def bench():
    """The benchmark script as a module (its functions, and ``main`` with an in-process training spawn)."""
    spec = importlib.util.spec_from_file_location('hst_efficiency_under_test', osp.join(ROOT, SCRIPT))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_help_lists_the_options():
    res = run_as_main(SCRIPT, '--help')
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith('usage:')
    for opt in ('--rows', '--batches', '--iters', '--compile', '--train-batch', '--device', '--threads', '--json',
                '--toy', '--vit-depth', '--size', '--lora-rank'):
        assert opt in res.stdout, f'--help does not mention {opt}'


def test_unknown_row_is_an_error_naming_it_and_the_choices():
    res = run_as_main(SCRIPT, '--rows', 'full,lora-typo', '--skip-flops', '--skip-infer', '--skip-train')
    assert res.returncode == 2
    assert "'lora-typo'" in res.stderr and 'hst-parallel' in res.stderr, res.stderr


def _check_ratios(table: dict, value_key: str, ratio_key: str) -> None:
    base = table['full'][value_key]
    assert base > 0, (value_key, base)
    assert table['full'][ratio_key] == 1.0
    for row, r in table.items():
        assert r[ratio_key] == pytest.approx(r[value_key] / base, rel=1e-12), (row, value_key)


def test_toy_run_writes_every_row_with_consistent_ratios(bench, tmp_path):
    out = tmp_path / 'table9.json'

    def in_process(row, argv):  # the training worker without a new process (whose imports take ~15 s)
        return bench.worker_train(row, bench.parse_args(argv))

    bench.main(['--toy', '--rows', ','.join(TOY_ROWS), '--threads', '1', '--device', 'cpu', '--json', str(out)],
               spawn=in_process)
    res = json.loads(out.read_text())
    assert res['args']['batches'] == [1, 2]
    for section in ('flops', 'infer', 'train'):
        assert list(res[section]) == TOY_ROWS, section
    _check_ratios(res['flops'], 'gmacs_all', 'ratio_all')
    _check_ratios(res['flops'], 'gmacs_paper', 'ratio_paper')
    for b in (1, 2):
        _check_ratios(res['infer'], f'imgs_per_s_bs{b}', f'ratio_bs{b}')
        for row, r in res['infer'].items():  # images / s from the median pass
            assert r[f'imgs_per_s_bs{b}'] == pytest.approx(b / r[f'sec_median_bs{b}']), row
            assert r[f'sec_min_bs{b}'] <= r[f'sec_median_bs{b}'], row
            full_min = res['infer']['full'][f'sec_min_bs{b}']
            assert r[f'ratio_fastest_bs{b}'] == pytest.approx(full_min / r[f'sec_min_bs{b}']), row
    train = res['train']
    _check_ratios(train, 'sec_per_step', 'time_ratio')
    base_mem = train['full']['train_rise_mb']
    for row, r in train.items():
        # a tiny model's training may fit in memory the process already holds: a rise of 0 has no ratio
        assert r['memory_ratio'] == (pytest.approx(r['train_rise_mb'] / base_mem) if base_mem > 0 else None), row
    # toy ViT: depth 4, width 64 -> 4 * 12 * 64^2 + biases + norms; LoRA trains 4 * 2 * 2 * 64 * 16 + the head
    assert train['lora']['trainable_m'] * 1e6 == pytest.approx(4 * 2 * 2 * 64 * 16 + 64 * 100 + 100)
    assert res['flops']['full']['paper_g'] is None  # a shrunk ViT is not compared with the paper


def _hand_macs(d: int, D: int, T: int, N: int, classes: int, extra_tokens: int = 0):
    """(paper convention, all ops) multiply-accumulates of a timm ViT classifier by hand.

    Per layer and token: qkv 3 D^2, proj D^2, MLP 2 * 4 D^2 (weight products); attention
    Q K^T and A V, T'^2 D each over all heads (activation products). Patch embedding: each of the N
    patches is a 3 x 16 x 16 -> D product; the head one D -> classes product on the class token.
    """
    t = T + extra_tokens
    weights = d * t * (3 * D * D + D * D + 8 * D * D) + N * (3 * 16 * 16) * D + D * classes
    return weights, weights + d * 2 * t * t * D


def test_flop_counts_match_hand_numbers(bench):
    args = bench.parse_args(['--toy', '--device', 'cpu'])
    d, D, side, C = args.vit_depth, args.vit_width, args.size, args.classes
    N = (side // 16) ** 2
    T = N + 1  # + the class token
    x = torch.randn(1, 3, side, side)

    def macs(row):
        c = bench.count_macs(bench.build_row(row, args), x)
        assert c['all'] == c['paper'] + c['attention']
        return c['paper'], c['all']

    paper, total = _hand_macs(d, D, T, N, C)
    assert macs('full') == (paper, total)
    # SSF's scales / shifts are no products; merged LoRA / SSF are the plain ViT again
    for row in ('ssf', 'lora-merged', 'ssf-merged'):
        assert macs(row) == (paper, total), row
    assert macs('vpt-deep') == _hand_macs(d, D, T, N, C, extra_tokens=64)  # 64 prompts in every layer
    r = args.lora_rank  # A: D -> r, B: r -> D, on q and on v, every token of every layer
    lora_extra = d * T * 2 * (D * r + r * D)
    assert macs('lora') == (paper + lora_extra, total + lora_extra)
    h = 64  # AdaptFormer's bottleneck: D -> 64 -> D beside every MLP
    ada_extra = d * T * (D * h + h * D)
    assert macs('adaptformer') == (paper + ada_extra, total + ada_extra)
    try:
        parallel = macs('hst-parallel')
    except bench.RowUnavailable:
        pytest.skip('HSTViT has no execution argument in this checkout')
    assert parallel == macs('hst-serial')  # the same arithmetic, run concurrently


def test_compiled_rows_are_timed_beside_the_eager_ones(bench, tmp_path):
    out = tmp_path / 'compiled.json'
    # backend 'eager': dynamo captures the graph (the part that can break) without inductor's minutes
    bench.main(['--toy', '--rows', 'full', '--batches', '1', '--compile', '--compile-backend', 'eager',
                '--skip-flops', '--skip-train', '--threads', '1', '--device', 'cpu', '--json', str(out)])
    infer = json.loads(out.read_text())['infer']
    assert set(infer) == {'full', 'full+compile'}
    compiled = infer['full+compile']
    assert 'error' not in compiled, compiled
    assert compiled['ratio_to_eager_bs1'] == pytest.approx(compiled['imgs_per_s_bs1'] / infer['full']['imgs_per_s_bs1'])
