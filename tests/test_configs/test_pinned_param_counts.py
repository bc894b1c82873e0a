"""Every config's parameter counts equal, to the parameter, those pinned in configs/param_counts.json.

Why exact: counts depend only on shapes and on which tensors are trainable, so they are deterministic;
a bug that adds one trainable bias, freezes one tensor too many or counts a tied tensor twice must fail
here (a band around the paper's numbers would let it pass). The paper comparison is README's tables.
Models are built on the meta device (the same modules, no weight storage) to keep CI fast; one config
is also built the default way, on the CPU, to show the shortcut counts what ``count_params.py`` counts.
"""
import importlib.util
import os.path as osp
from typing import Dict

import pytest

from mmpeft_testing import metafiles_read_once

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_spec = importlib.util.spec_from_file_location('update_counts', osp.join(ROOT, 'tools', 'dev', 'update_counts.py'))
update_counts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(update_counts)

PINNED = update_counts.load_pinned()
REPIN = ('If the change is intended (e.g. issue #10 changes the HST modules), re-pin with '
         '`.venv/bin/python tools/dev/update_counts.py` (add `--device meta` for speed) and commit '
         'configs/param_counts.json with the regenerated README.md tables.')


@pytest.fixture(scope='module', autouse=True)
def read_metafiles_once():
    with metafiles_read_once():
        yield


def differences(got: Dict[str, Dict[str, int]], want: Dict[str, Dict[str, int]]) -> str:
    """One line per part / kind that differs, with the signed difference in parameters."""
    lines = []
    for part in sorted(set(got) | set(want)):
        for kind in ('trainable', 'total'):
            g, w = got.get(part, {}).get(kind, 0), want.get(part, {}).get(kind, 0)
            if g != w:
                lines.append(f'  {part} {kind}: built {g:,} vs pinned {w:,} ({g - w:+,})')
    return '\n'.join(lines)


def test_every_config_is_pinned():
    keys = set(update_counts.all_keys())
    missing, gone = sorted(keys - set(PINNED)), sorted(set(PINNED) - keys)
    assert not missing and not gone, (
        f'configs/param_counts.json does not match configs/: not pinned {missing}, pinned but no longer '
        f'a config {gone}. {REPIN}')


@pytest.mark.parametrize('key', sorted(PINNED), ids=[k.replace(' ', '+') for k in sorted(PINNED)])
def test_counts_equal_the_pinned_counts(key):
    got = update_counts.measure(key, device='meta')
    assert got == PINNED[key], (f'{key}: parameter counts differ from configs/param_counts.json\n'
                                f'{differences(got, PINNED[key])}\n{REPIN}')


def test_cpu_build_counts_what_the_meta_build_counts():
    """The demo's Polyhistor-Lite: Swin (whose drop-path schedule needs a real ``linspace``), the
    task-conditioned hyper-networks, four heads; built with random weights as count_params does."""
    key = 'configs/demo/polyhistor-lite_swin-tiny_synthetic-mt-64x64.py'
    got = update_counts.measure(key)
    assert got == PINNED[key], f'{key} on the CPU:\n{differences(got, PINNED[key])}\n{REPIN}'


def test_pinned_counts_are_consistent():
    """Relations that hold whatever the numbers: freezing changes no total; full fine-tuning trains
    everything; decoders only trains nothing in the encoder; All is the sum of the parts."""
    mt = 'swin-t_pascal-context-mt-512x512.py'
    full, dec = PINNED[f'configs/polyhistor/mt-full-ft_{mt}'], PINNED[f'configs/polyhistor/decoders-only_{mt}']
    assert full['All']['trainable'] == full['All']['total'] == dec['All']['total']
    assert dec['Encoder']['trainable'] == 0 and dec['Encoder']['total'] == full['Encoder']['total']
    for key, counts in PINNED.items():
        parts = [v for k, v in counts.items() if k != 'All']
        assert counts['All'] == dict(trainable=sum(p['trainable'] for p in parts),
                                     total=sum(p['total'] for p in parts)), key
