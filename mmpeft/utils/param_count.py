"""Parameter accounting the way both papers print it: Encoder / All trainable, in millions.

Parts are decided by the first component of a parameter's name: ``backbone`` / ``encoder`` is the
Encoder; ``neck`` the Neck; anything containing ``head`` or ``decoder`` the Heads; the rest Other.
Shared tensors are counted once (``named_parameters`` de-duplicates).
"""
from collections import OrderedDict
from typing import Dict, List

import torch.nn as nn

PARTS = ('Encoder', 'Neck', 'Heads', 'Other')


def part_of(name: str) -> str:
    first = name.split('.', 1)[0].lower()
    if first in ('backbone', 'encoder', 'backbones'):
        return 'Encoder'
    if first.startswith('neck'):
        return 'Neck'
    if 'head' in first or 'decoder' in first:
        return 'Heads'
    return 'Other'


def count_params(model: nn.Module) -> 'OrderedDict[str, Dict[str, int]]':
    """``{part: {'trainable': n, 'total': n}}`` for each part and ``All`` (parts with no parameters omitted)."""
    counts = OrderedDict((p, dict(trainable=0, total=0)) for p in PARTS)
    for name, p in model.named_parameters():
        c = counts[part_of(name)]
        c['total'] += p.numel()
        if p.requires_grad:
            c['trainable'] += p.numel()
    out = OrderedDict((k, v) for k, v in counts.items() if v['total'] > 0)
    out['All'] = dict(trainable=sum(v['trainable'] for v in out.values()),
                      total=sum(v['total'] for v in out.values()))
    return out


def millions(n: int) -> str:
    return f'{n / 1e6:.2f}'


def format_param_table(counts: Dict[str, Dict[str, int]], title: str = '') -> str:
    """A markdown table: part | trainable (M) | total (M) | trainable %, then the paper-style line."""
    lines: List[str] = []
    if title:
        lines.append(title)
    lines.append('| part | trainable (M) | total (M) | trainable % |')
    lines.append('| --- | ---: | ---: | ---: |')
    for part, c in counts.items():
        pct = 100.0 * c['trainable'] / c['total'] if c['total'] else 0.0
        lines.append(f"| {part} | {millions(c['trainable'])} | {millions(c['total'])} | {pct:.2f} |")
    enc = counts.get('Encoder', dict(trainable=0))['trainable']
    lines.append(f"Encoder / All trainable (M): {millions(enc)} / {millions(counts['All']['trainable'])}")
    return '\n'.join(lines)
