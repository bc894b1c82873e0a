import subprocess
import sys

import torch.nn as nn

from mmpeft.utils.param_count import count_params, format_param_table, part_of


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(1000, 1000)       # 1,001,000
        self.neck = nn.Linear(100, 10)              # 1,010
        self.decode_head = nn.Linear(10, 5)         # 55
        self.auxiliary_head = nn.Linear(10, 5)      # 55
        self.backbone.weight.requires_grad_(False)


def test_counts_by_part():
    c = count_params(M())
    assert c['Encoder'] == dict(trainable=1000, total=1001000)
    assert c['Neck'] == dict(trainable=1010, total=1010)
    assert c['Heads'] == dict(trainable=110, total=110)
    assert c['All'] == dict(trainable=2120, total=1002120)
    assert 'Other' not in c
    table = format_param_table(c)
    assert '| Encoder | 0.00 | 1.00 | 0.10 |' in table
    assert 'Encoder / All trainable (M): 0.00 / 0.00' in table


def test_parts():
    assert part_of('backbone.x') == 'Encoder'
    assert part_of('roi_head.bbox_head.fc') == 'Heads'
    assert part_of('heads.semseg.linear') == 'Heads'
    assert part_of('neck.lateral') == 'Neck'
    assert part_of('data_preprocessor.mean') == 'Other'


def test_example_configs_build_with_each_toolbox():
    """The README's quick starts (mmseg, mmdet, mmpretrain bases + one mmpeft line) build."""
    from mmpeft_testing import ROOT
    out = subprocess.run([sys.executable, 'tools/analysis_tools/count_params.py', 'configs/examples'],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith('| ') and '.py' in line]
    assert len(rows) == 3 and not any('error' in r for r in rows), out.stdout
    for r in rows:
        enc, all_, total = (float(x) for x in r.strip('| ').split('|')[1:4])
        assert 0 < enc < 0.1 and enc < all_ < total  # a frozen Swin-T with a few trained tensors
