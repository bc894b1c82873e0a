"""tools/model_converters/merge_peft.py: a trained LoRA / SSF checkpoint becomes a plain checkpoint
of the original architecture whose outputs equal the unmerged model's."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import save_checkpoint
from peft_checks import MMPRETRAIN_VIT, SWIN, TASKS, perturb

import mmpeft  # noqa: F401
from mmpeft.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_spec = importlib.util.spec_from_file_location('merge_peft', osp.join(ROOT, 'tools/model_converters/merge_peft.py'))
merge_peft = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(merge_peft)

CLASSIFIER = '''
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(type='ImageClassifier',
             backbone=dict(type='PEFTBackbone', backbone={vit}, method={method}),
             head=dict(type='LinearClsHead', num_classes=5, in_channels=32))
'''
MULTITASK = '''
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(type='MultiTaskDenseModel', tasks={tasks},
             decode_head=dict(type='AllMLPHead', in_channels=[16, 32, 64, 128], channels=16, dropout_ratio=0.0),
             backbone=dict(type='PEFTBackbone', backbone={swin}, method={method}))
'''


def _train_and_save(tmp_path, text):
    path = str(tmp_path / 'cfg.py')
    with open(path, 'w') as f:
        f.write(text)
    cfg = Config.fromfile(path)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    perturb(model)  # trained-looking method parameters
    ckpt = str(tmp_path / 'trained.pth')
    save_checkpoint(dict(state_dict=model.state_dict()), ckpt)
    return path, ckpt, model.eval()


@pytest.mark.parametrize('method', ["dict(type='LoRA', rank=2, targets=('qkv', 'fc2'))", "dict(type='SSF')"])
def test_classifier_round_trip(tmp_path, method):
    vit = dict(MMPRETRAIN_VIT, out_indices=[2], out_type='cls_token')
    path, ckpt, model = _train_and_save(tmp_path, CLASSIFIER.format(vit=vit, method=method))
    out, out_cfg = str(tmp_path / 'merged.pth'), str(tmp_path / 'plain.py')
    merge_peft.merge_checkpoint(path, ckpt, out, out_config=out_cfg)
    plain_cfg = Config.fromfile(out_cfg)
    assert plain_cfg.model.backbone.type == 'mmpretrain.VisionTransformer'
    plain = MODELS.build(plain_cfg.model)
    sd = torch.load(out, map_location='cpu', weights_only=False)['state_dict']
    assert not any(('lora' in k or 'ssf' in k) for k in sd)
    plain.load_state_dict(sd, strict=True)
    plain.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(x, mode='tensor') - plain(x, mode='tensor')).abs().max() < 1e-5


def test_multi_task_model_merges_one_task(tmp_path):
    swin = dict(SWIN, type='PretrainedSwin')
    path, ckpt, model = _train_and_save(
        tmp_path, MULTITASK.format(tasks=TASKS, swin=swin, method=f"dict(type='SSF', tasks={TASKS})"))
    out = str(tmp_path / 'merged.pth')
    with pytest.raises(ValueError, match='task'):
        merge_peft.merge_checkpoint(path, ckpt, out)
    result = merge_peft.merge_checkpoint(path, ckpt, out, task='sal')
    cfg = Config.fromfile(path)
    plain = MODELS.build(merge_peft.plain_model_cfg(cfg.model))
    plain.load_state_dict(result['state_dict'], strict=True)
    plain.eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        want = model.backbone(x, task='sal')
        got = plain.backbone(x)
    assert max((a - b).abs().max().item() for a, b in zip(want, got)) < 1e-5


def test_non_mergeable_method_is_refused(tmp_path):
    vit = dict(MMPRETRAIN_VIT, out_indices=[2], out_type='cls_token')
    path, ckpt, _ = _train_and_save(tmp_path, CLASSIFIER.format(vit=vit, method="dict(type='Adapter')"))
    with pytest.raises(ValueError, match='cannot be merged'):
        merge_peft.merge_checkpoint(path, ckpt, str(tmp_path / 'x.pth'))
