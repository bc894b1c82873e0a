"""MoBY's self-supervised Swin checkpoints (issue #12, Polyhistor Table 8's MoBY-Tiny backbone).

A MoBY checkpoint (``moby_swin_t_300ep_pretrained.pth``) holds, under ``model``, the query encoder as
``encoder.`` + the official Swin layout, beside the momentum key encoder ``encoder_k.``, the projector /
predictor MLPs and the queues. The fake files here are written by hand from a tiny toolbox Swin's key
names: this test's own renaming to the official layout (and the patch-merging channel order), then the
MoBY prefixes. After loading, every backbone tensor must equal the file's ``encoder.`` tensor through that
mapping; the key encoder (filled with other values) must not leak in.
"""
import logging
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

from mmpeft.backbones import PretrainedSwin, build_peft_backbone
from mmpeft.registry import MODELS

TINY = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.0)
WIDTH = 16 * 8  # last stage
CKPT = 'pretrain/moby_swin_t_300ep_pretrained.pth'
# official PatchMerging concatenates (h0, w0), (h1, w0), (h0, w1), (h1, w1) as 4 blocks of C channels; the
# toolboxes' nn.Unfold orders, per channel c, (h0, w0), (h0, w1), (h1, w0), (h1, w1)
OFFICIAL_BLOCK = {(0, 0): 0, (1, 0): 1, (0, 1): 2, (1, 1): 3}


def official_key(key: str) -> str:
    """Toolbox Swin key -> the official (Microsoft / MoBY) name."""
    for a, b in (('patch_embed.projection.', 'patch_embed.proj.'), ('.attn.w_msa.', '.attn.'),
                 ('.ffn.layers.0.0.', '.mlp.fc1.'), ('.ffn.layers.1.', '.mlp.fc2.')):
        key = key.replace(a, b)
    return re.sub(r'^stages\.', 'layers.', key)


def toolbox_merging(official: torch.Tensor) -> torch.Tensor:
    """A patch-merging reduction weight (out, 4C) or norm (4C,) in the toolbox channel order."""
    c = official.shape[-1] // 4
    out = torch.empty_like(official)
    for (kh, kw), block in OFFICIAL_BLOCK.items():
        for ch in range(c):
            out[..., ch * 4 + kh * 2 + kw] = official[..., block * c + ch]
    return out


def moby_checkpoint(plain: torch.nn.Module, seed: int = 0) -> Tuple[dict, Dict[str, torch.Tensor], Dict[str, int]]:
    """A MoBY training checkpoint for ``plain``'s architecture, by hand.

    Returns:
        ``(checkpoint, expected, left_out)``: the file's content; the tensor each toolbox key must hold
        after loading (the final ``norm`` of the file goes to ``norm3`` where the backbone has only that
        output norm); the number of tensors of each MoBY part that must be left out.
    """
    gen = torch.Generator().manual_seed(seed)
    encoder, expected = OrderedDict(), {}
    for key, value in plain.state_dict().items():
        if re.match(r'norm\d+\.', key) or key.endswith('relative_position_index'):
            continue  # dense output norms (not in a classification encoder); derived buffers
        tensor = torch.randn(value.shape, generator=gen)
        encoder[official_key(key)] = tensor
        expected[key] = toolbox_merging(tensor) if '.downsample.' in key else tensor
    encoder['norm.weight'], encoder['norm.bias'] = torch.randn(WIDTH, generator=gen), torch.randn(WIDTH, generator=gen)
    encoder['layers.2.blocks.1.attn_mask'] = torch.zeros(4, 16, 16)  # the shifted block's buffer, as saved
    if 'norm3.weight' in plain.state_dict() and 'norm0.weight' not in plain.state_dict():
        expected['norm3.weight'], expected['norm3.bias'] = encoder['norm.weight'], encoder['norm.bias']
    model = OrderedDict(('encoder.' + k, v) for k, v in encoder.items())
    model.update(('encoder_k.' + k, torch.full_like(v, 7.0)) for k, v in encoder.items())  # must not be loaded
    # MoBYMLP: Linear, BatchNorm1d (with its running statistics), ReLU, Linear
    mlp = OrderedDict([('linear_hidden.1.weight', torch.ones(32, WIDTH)), ('linear_hidden.1.bias', torch.ones(32)),
                       ('linear_hidden.2.weight', torch.ones(32)), ('linear_hidden.2.bias', torch.ones(32)),
                       ('linear_hidden.2.running_mean', torch.ones(32)),
                       ('linear_hidden.2.running_var', torch.ones(32)),
                       ('linear_hidden.2.num_batches_tracked', torch.tensor(5)),
                       ('linear_out.weight', torch.ones(8, 32)), ('linear_out.bias', torch.ones(8))])
    for part in ('projector', 'projector_k', 'predictor'):
        model.update((f'{part}.{k}', v) for k, v in mlp.items())
    model['queue1'], model['queue2'] = torch.randn(8, 64), torch.randn(8, 64)
    model['queue_ptr'] = torch.zeros(1, dtype=torch.long)
    n_enc = len(encoder)
    left_out = dict(encoder_k=n_enc, projector=9, projector_k=9, predictor=9, queue1=1, queue2=1, queue_ptr=1)
    return dict(model=model, epoch=299), expected, left_out


def left_out_line(left_out: Dict[str, int]) -> str:
    return 'left out: ' + ', '.join(f'{g} ({n})' for g, n in left_out.items())


class LogLines:
    """Messages logged to mmengine's current logger inside the block."""

    def __enter__(self) -> List[str]:
        self.lines: List[str] = []
        self.logger = MMLogger.get_current_instance()
        self.handler = logging.Handler()
        self.handler.emit = lambda record: self.lines.append(record.getMessage())
        self.logger.addHandler(self.handler)
        return self.lines

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self.handler)


def assert_loaded(model: torch.nn.Module, expected: Dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    for key, want in expected.items():
        assert torch.equal(state[key], want), key


@pytest.fixture
def plain_swin():
    torch.manual_seed(0)
    return PretrainedSwin(**TINY)


@pytest.mark.parametrize('layout', [None, 'auto', 'moby'])
def test_pretrained_swin_loads_the_query_encoder_and_lists_the_rest(tmp_path, plain_swin, layout):
    ckpt, expected, left_out = moby_checkpoint(plain_swin)
    path = str(tmp_path / 'moby.pth')
    torch.save(ckpt, path)
    init_cfg = dict(type='Pretrained', checkpoint=path)
    if layout is not None:
        init_cfg['layout'] = layout
    model = PretrainedSwin(init_cfg=init_cfg, **TINY)
    with LogLines() as lines:
        model.init_weights()
    assert_loaded(model, expected)
    assert len(expected) == sum(1 for k in model.state_dict()
                                if not re.match(r'norm\d\.', k) and not k.endswith('relative_position_index'))
    moby_lines = [m for m in lines if 'MoBY checkpoint' in m]
    assert len(moby_lines) == 1 and left_out_line(left_out) in moby_lines[0], lines
    assert f"('encoder.*', {left_out['encoder_k']} tensors)" in moby_lines[0]


def test_baseline_config_path_loads_moby(tmp_path):
    """PEFTBackbone(PretrainedSwin) as the Table 8 baseline configs build it (their backbone dict with the
    tiny sizes and the fake file): BitFit's per-task biases start from the loaded biases."""
    from mmengine.config import Config
    cfg = Config.fromfile('configs/polyhistor/moby-tiny/bitfit_moby-swin-t_pascal-context-mt-512x512.py')
    backbone_cfg = cfg.model.backbone.to_dict()
    assert backbone_cfg['backbone']['init_cfg'] == dict(type='Pretrained', checkpoint=CKPT, layout='moby')
    torch.manual_seed(0)
    ckpt, expected, left_out = moby_checkpoint(PretrainedSwin(**TINY))
    path = str(tmp_path / 'moby.pth')
    torch.save(ckpt, path)
    backbone_cfg['backbone'].update(TINY, out_indices=(0, 1, 2, 3))
    backbone_cfg['backbone']['init_cfg']['checkpoint'] = path
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(backbone_cfg)
    with LogLines() as lines:
        model.init_weights()
    assert_loaded(model, expected)
    assert any(left_out_line(left_out) in m for m in lines), lines
    assert any('all' in m and 'backbone weights loaded' in m for m in lines), lines  # PEFTBackbone's check


def _mmpretrain_swin(**kw):
    arch = dict(embed_dims=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4])
    return dict(type='mmpretrain.SwinTransformer', arch=arch, img_size=64, window_size=4, out_indices=(3,), **kw)


def test_toolbox_swin_in_peft_backbone_loads_moby(tmp_path):
    """mmpretrain's own Swin with init_cfg=PretrainedOfficialSwin, inside build_peft_backbone (which
    checks every backbone weight was written by the load). (mmseg's and mmdet's Swin read the init_cfg
    checkpoint themselves whatever its type: PretrainedSwin is mmpeft's mmseg Swin.)"""
    torch.manual_seed(0)
    ckpt, expected, left_out = moby_checkpoint(MODELS.build(_mmpretrain_swin()))
    assert 'norm3.weight' in expected  # MoBY's final encoder norm is mmpretrain's last output norm
    path = str(tmp_path / 'moby.pth')
    torch.save(ckpt, path)
    model = build_peft_backbone(_mmpretrain_swin(init_cfg=dict(type='PretrainedOfficialSwin', checkpoint=path)),
                                dict(type='BitFit'))
    with LogLines() as lines:
        model.init_weights()
    assert_loaded(model, expected)
    assert any('PretrainedOfficialSwin' in m and left_out_line(left_out) in m for m in lines), lines


def test_missing_encoder_tensor_is_a_key_error_naming_it(tmp_path, plain_swin):
    ckpt, _, _ = moby_checkpoint(plain_swin)
    del ckpt['model']['encoder.layers.2.blocks.1.mlp.fc2.weight']
    path = str(tmp_path / 'moby.pth')
    torch.save(ckpt, path)
    model = PretrainedSwin(init_cfg=dict(type='Pretrained', checkpoint=path), **TINY)
    with pytest.raises(KeyError, match=r"missing \['stages\.2\.blocks\.1\.ffn\.layers\.1\.weight'\].*"
                                       r"encoder\.layers\.2\.blocks\.1\.mlp\.fc2\.weight"):
        model.init_weights()

    torch.manual_seed(0)
    ckpt, _, _ = moby_checkpoint(MODELS.build(_mmpretrain_swin()))
    del ckpt['model']['encoder.layers.2.blocks.1.mlp.fc2.weight']
    torch.save(ckpt, path)
    model = build_peft_backbone(_mmpretrain_swin(init_cfg=dict(type='PretrainedOfficialSwin', checkpoint=path)),
                                dict(type='BitFit'))
    with pytest.raises(KeyError, match=r'left 1 of .*stages\.2\.blocks\.1\.ffn\.layers\.1\.weight'):
        model.init_weights()


def test_moby_layout_asked_for_without_an_encoder_is_an_error(tmp_path, plain_swin):
    ckpt, _, _ = moby_checkpoint(plain_swin)
    official = {k[len('encoder.'):]: v for k, v in ckpt['model'].items() if k.startswith('encoder.')}
    path = str(tmp_path / 'official.pth')
    torch.save(dict(model=official), path)
    model = PretrainedSwin(init_cfg=dict(type='Pretrained', checkpoint=path, layout='moby'), **TINY)
    with pytest.raises(KeyError, match=r"official\.pth: the MoBY layout was asked for, but no key starts with "
                                       r"'encoder\.'.*layers \(\d+\).*drop layout='moby'"):
        model.init_weights()
    init = MODELS.build(_mmpretrain_swin(init_cfg=dict(type='PretrainedOfficialSwin', checkpoint=path, layout='moby')))
    with pytest.raises(KeyError, match="no key starts with 'encoder.'"):
        init.init_weights()
    # the same file without layout='moby' is an official one and loads
    PretrainedSwin(init_cfg=dict(type='Pretrained', checkpoint=path), **TINY).init_weights()


def test_unknown_group_is_an_error_not_dropped(tmp_path, plain_swin):
    ckpt, _, _ = moby_checkpoint(plain_swin)
    ckpt['model']['classifier.weight'] = torch.ones(3, 4)
    ckpt['model']['classifier.bias'] = torch.ones(3)
    path = str(tmp_path / 'moby.pth')
    torch.save(ckpt, path)
    for model in (PretrainedSwin(init_cfg=dict(type='Pretrained', checkpoint=path), **TINY),
                  build_peft_backbone(_mmpretrain_swin(init_cfg=dict(type='PretrainedOfficialSwin', checkpoint=path)))):
        with pytest.raises(KeyError, match=r'neither the query encoder .*: classifier \(2\)\. They would be dropped'):
            model.init_weights()


def test_encoder_only_file_needs_layout_moby(tmp_path, plain_swin):
    """Without encoder_k the file is not recognised as MoBY's: strict loading names the keys and the option."""
    ckpt, expected, _ = moby_checkpoint(plain_swin)
    path = str(tmp_path / 'encoder_only.pth')
    torch.save(dict(model={k: v for k, v in ckpt['model'].items() if k.startswith('encoder.')}), path)
    with pytest.raises(KeyError, match=r"unexpected \['encoder\.patch_embed.*set init_cfg layout='moby'"):
        PretrainedSwin(init_cfg=dict(type='Pretrained', checkpoint=path), **TINY).init_weights()
    model = PretrainedSwin(init_cfg=dict(type='Pretrained', checkpoint=path, layout='moby'), **TINY)
    with LogLines() as lines:
        model.init_weights()
    assert_loaded(model, expected)
    assert any(m.endswith('left out: none') for m in lines), lines


def test_unknown_layout_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match=r"layout='mocov3' is not one of \('auto', 'moby'\)"):
        PretrainedSwin(init_cfg=dict(type='Pretrained', checkpoint='x.pth', layout='mocov3'), **TINY).init_weights()
    with pytest.raises(ValueError, match=r"layout='mocov3' is not one of"):
        MODELS.build(_mmpretrain_swin(init_cfg=dict(type='PretrainedOfficialSwin', checkpoint='x.pth',
                                                    layout='mocov3'))).init_weights()
