"""The HST VTAB-1k (Table 2) and FGVC / CIFAR-100 (Table 3) configs carry the authors' recipes.

Each family is checked as a whole against this file's own copy of the recipe tables (issue #13, from
the authors' training scripts): every config resolves, and its classes, lr, weight decay, drop path,
batch, schedule, pipelines, normalisation and weights are the table's. One config per family is built
at full size on the meta device and its trainable count compared with the released model's / the
head's size by hand; the others differ from it only in what the table sets (checked on the resolved
dicts). A shrunk VTAB-1k row trains two iterations through mmengine's Runner on generated images in
the release layout, and a shrunk FGVC row takes a mixup / cutmix step whose loss is recomputed by hand.
"""
import copy
import functools
import glob
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from tiny_vtab import write_vtab_task

import mmpeft  # noqa: F401
from mmpeft.datasets import VTAB1K_TASKS
from mmpeft_testing import metafiles_read_once

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
VTAB_DIR = osp.join(ROOT, 'configs', 'hst', 'vtab1k')
FGVC_DIR = osp.join(ROOT, 'configs', 'hst', 'fgvc')

# task: (classes, lr, weight decay, drop path), the table of issue #13 (the authors' VTAB-1k scripts)
VTAB = {
    'cifar': (100, 1e-2, 5e-4, 0.0), 'caltech101': (102, 1e-3, 5e-4, 0.1), 'dtd': (47, 1e-2, 5e-4, 0.0),
    'oxford_flowers102': (102, 1e-3, 5e-5, 0.0), 'oxford_iiit_pet': (37, 1e-2, 5e-4, 0.0),
    'svhn': (10, 1e-2, 5e-5, 0.1), 'sun397': (397, 1e-2, 5e-5, 0.0), 'patch_camelyon': (2, 5e-3, 5e-4, 0.1),
    'eurosat': (10, 1e-3, 5e-4, 0.1), 'resisc45': (45, 5e-3, 5e-4, 0.0),
    'diabetic_retinopathy': (5, 1e-3, 5e-5, 0.1), 'clevr_count': (8, 1e-3, 5e-4, 0.1),
    'clevr_dist': (6, 5e-3, 5e-4, 0.1), 'dmlab': (6, 5e-3, 5e-4, 0.1), 'kitti': (4, 5e-3, 5e-2, 0.1),
    'dsprites_loc': (16, 5e-3, 5e-4, 0.1), 'dsprites_ori': (16, 1e-3, 5e-4, 0.1),
    'smallnorb_azi': (18, 1e-3, 5e-4, 0.1), 'smallnorb_ele': (9, 1e-3, 5e-2, 0.2),
}
# file part: (dataset type, classes, (lr, weight decay) with in21k weights, the same with MAE weights)
FGVC = {
    'cub200': ('CUB200Dataset', 200, (1e-3, 5e-2), (1e-3, 5e-2)),
    'nabirds': ('NABirdsDataset', 555, (5e-4, 5e-2), (1e-3, 5e-2)),
    'oxford-flowers': ('OxfordFlowersDataset', 102, (1e-3, 5e-5), (1e-3, 5e-5)),
    'stanford-cars': ('StanfordCarsDataset', 196, (5e-3, 5e-2), (1e-3, 5e-2)),
    'stanford-dogs': ('StanfordDogsDataset', 120, (5e-3, 5e-2), (1e-3, 5e-2)),
    'cifar100': ('CIFAR100', 100, (5e-3, 5e-2), (5e-3, 5e-2)),
}
HST_B_DIMS, HST_S_DIMS = [32, 48, 64, 72], [20, 24, 32, 36]
IN21K = 'pretrain/jx_vit_base_patch16_224_in21k.pth'
MAE = 'pretrain/mae_pretrain_vit_base.pth'
IMAGENET_MEAN, IMAGENET_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]

TINY_VIT = dict(depth=4, embed_dim=32, num_heads=2, img_size=64)


@pytest.fixture(scope='module', autouse=True)
def read_metafiles_once():
    with metafiles_read_once():
        yield


@functools.lru_cache(maxsize=None)
def load(path: str) -> Config:
    return Config.fromfile(path)


def load_dict(path: str) -> dict:
    return copy.deepcopy(load(path).to_dict())


def vtab_configs(family: str):
    return sorted(glob.glob(osp.join(VTAB_DIR, f'vit-b_{family}_vtab1k-*.py')))


def check_schedule(cfg, lr: float):
    """AdamW through AMP, 10 warm-up epochs from 1e-7, cosine to 1e-8 at epoch 100, decay on every
    tensor (no paramwise_cfg)."""
    ow = cfg.optim_wrapper
    assert ow.type == 'AmpOptimWrapper' and 'paramwise_cfg' not in ow
    assert ow.optimizer.type == 'AdamW' and ow.optimizer.lr == lr
    warm, cos = cfg.param_scheduler
    assert warm.type == 'LinearLR' and (warm.begin, warm.end) == (0, 10) and warm.by_epoch
    assert warm.start_factor * lr == pytest.approx(1e-7, rel=1e-9)
    assert warm.get('end_factor', 1.0) == 1.0
    assert cos.type == 'CosineAnnealingLR' and (cos.begin, cos.end) == (10, 100) and cos.eta_min == 1e-8
    assert cfg.train_cfg.max_epochs == 100 and cfg.train_cfg.by_epoch


# --------------------------------------------------------------------------- VTAB-1k (Table 2)
def test_vtab_families_cover_the_19_tasks_once():
    assert list(VTAB1K_TASKS) == list(VTAB)  # the dataset module's order is the table's (Table 2's)
    for family in ('hst', 'hst-s'):
        tasks = [load(p).task for p in vtab_configs(family)]
        assert sorted(tasks) == sorted(VTAB), family
    # nothing else in the folder: one config per task and family
    assert len(glob.glob(osp.join(VTAB_DIR, '*.py'))) == 2 * len(VTAB)


@pytest.mark.parametrize('family', ['hst', 'hst-s'])
def test_vtab_configs_carry_the_authors_recipe(family):
    for path in vtab_configs(family):
        cfg = load(path)
        classes, lr, wd, dp = VTAB[cfg.task]
        name = osp.basename(path)
        assert cfg.model.head.num_classes == cfg.data_preprocessor.num_classes == classes, name
        check_schedule(cfg, lr)
        assert cfg.optim_wrapper.optimizer.weight_decay == wd, name
        bb = cfg.model.backbone
        assert bb.drop_path_rate == dp and bb.get('vit_drop_path_rate') is None, name  # ViT blocks too
        assert bb.init_cfg.checkpoint == IN21K, name
        assert bb.embed_dims == (HST_B_DIMS if family == 'hst' else HST_S_DIMS), name
        assert cfg.model.head.in_channels == bb.embed_dims[-1], name
        # no augmentation: resize the short side to 224 (bilinear), centre crop 224, train and test
        assert cfg.model.get('train_cfg') is None and cfg.model.head.loss.type == 'CrossEntropyLoss', name
        assert cfg.data_preprocessor.mean == cfg.data_preprocessor.std == [127.5] * 3
        assert cfg.data_preprocessor.to_rgb
        for key, split in (('train_dataloader', 'train800val200'), ('val_dataloader', 'test'),
                           ('test_dataloader', 'test')):
            ds = cfg[key].dataset
            assert (ds.type, ds.task, ds.split, ds.num_classes) == ('VTAB1kDataset', cfg.task, split, classes)
            assert [t.type for t in ds.pipeline] == ['LoadImageFromFile', 'ResizeEdge', 'CenterCrop', 'PackInputs']
            resize, crop = ds.pipeline[1], ds.pipeline[2]
            assert (resize.scale, resize.edge, resize.interpolation, crop.crop_size) == (224, 'short', 'bilinear', 224)
        assert cfg.train_dataloader.batch_size == 32 and cfg.train_dataloader.drop_last, name  # x 2 GPUs


def test_hst_s_is_hst_b_with_the_small_side_network():
    """Each HST-S row is its task's HST-B row with only the side widths (and the head input) changed."""
    for path in vtab_configs('hst-s'):
        small = load_dict(path)
        base = load_dict(path.replace('vit-b_hst-s_', 'vit-b_hst_'))
        assert small['model']['backbone'].pop('embed_dims') == HST_S_DIMS
        assert base['model']['backbone'].pop('embed_dims') == HST_B_DIMS
        assert (small['model']['head'].pop('in_channels'), base['model']['head'].pop('in_channels')) == (36, 72)
        assert small == base, osp.basename(path)


def build_meta(cfg: Config):
    """The config's model at full size on the meta device (shapes only), no checkpoint read."""
    from mmpeft.registry import MODELS
    model = copy.deepcopy(cfg.model)
    model.backbone.pop('init_cfg')
    with DefaultScope.overwrite_default_scope('mmpretrain'), torch.device('meta'):
        return MODELS.build(model)


def test_vtab_models_build_at_full_size_with_the_papers_counts():
    from mmpeft.utils.param_count import count_params
    b = count_params(build_meta(load(osp.join(VTAB_DIR, 'vit-b_hst_vtab1k-cifar100.py'))))
    # the authors' released CIFAR-100 model trains 772,140 parameters (paper: 0.78M)
    assert b['All']['trainable'] == 772_140
    assert b['Heads']['trainable'] == 72 * 100 + 100
    s = count_params(build_meta(load(osp.join(VTAB_DIR, 'vit-b_hst-s_vtab1k-cifar100.py'))))
    assert s['Heads']['trainable'] == 36 * 100 + 100
    assert s['Encoder']['total'] - s['Encoder']['trainable'] == b['Encoder']['total'] - b['Encoder']['trainable']
    # paper Table 2: HST-S 0.28M, on CIFAR-100 and as the mean over the 19 tasks' heads
    assert 275_000 <= s['All']['trainable'] < 285_000
    mean_head = np.mean([(36 + 1) * c for c, *_ in VTAB.values()])
    assert 275_000 <= s['Encoder']['trainable'] + mean_head < 285_000


# --------------------------------------------------------------------------- FGVC + CIFAR-100 (Table 3)
def fgvc_path(weights: str, name: str) -> str:
    return osp.join(FGVC_DIR, f'vit-b-{weights}_hst_{name}.py')


def test_fgvc_folder_holds_one_config_per_dataset_and_weights():
    expected = {fgvc_path(w, n) for w in ('in21k', 'mae') for n in FGVC}
    assert set(glob.glob(osp.join(FGVC_DIR, '*.py'))) == expected


@pytest.mark.parametrize('weights', ['in21k', 'mae'])
def test_fgvc_configs_carry_the_authors_recipe(weights):
    for name, (dtype, classes, in21k, mae) in FGVC.items():
        cfg = load(fgvc_path(weights, name))
        lr, wd = in21k if weights == 'in21k' else mae
        assert cfg.model.head.num_classes == cfg.data_preprocessor.num_classes == classes, name
        check_schedule(cfg, lr)
        assert cfg.optim_wrapper.optimizer.weight_decay == wd, name
        bb = cfg.model.backbone
        assert bb.drop_path_rate == 0 and bb.embed_dims == HST_B_DIMS and bb.get('vit_drop_path_rate') is None
        assert bb.init_cfg.checkpoint == (IN21K if weights == 'in21k' else MAE), name
        mean, std = ([127.5] * 3, [127.5] * 3) if weights == 'in21k' else (IMAGENET_MEAN, IMAGENET_STD)
        assert (cfg.data_preprocessor.mean, cfg.data_preprocessor.std) == (mean, std), name
        # CIFAR's pickled images are RGB arrays already; decoded files are BGR
        assert cfg.data_preprocessor.to_rgb == (dtype != 'CIFAR100'), name
        # the training script's defaults: mixup 0.8 / cutmix 1.0, label smoothing 0.1
        assert cfg.model.train_cfg.augments == [dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]
        loss = cfg.model.head.loss
        assert (loss.type, loss.label_smooth_val, loss.mode) == ('LabelSmoothLoss', 0.1, 'original'), name
        train, test = cfg.train_dataloader, cfg.test_dataloader
        assert train.batch_size == 32 and train.drop_last, name  # x 4 GPUs
        assert train.dataset.type == test.dataset.type == dtype, name
        splits = ('train', 'test') if dtype == 'CIFAR100' else ('trainval', 'test')
        assert (train.dataset.split, test.dataset.split) == splits, name
        steps = {t.type: t for t in train.dataset.pipeline}
        assert steps['RandomResizedCrop'].scale == 224, name
        assert (steps['RandomFlip'].prob, steps['RandomFlip'].direction) == (0.5, 'horizontal'), name
        steps = {t.type: t for t in test.dataset.pipeline}
        # 224 / 0.875 = 256 on the short side, centre 224
        resize, crop = steps['ResizeEdge'], steps['CenterCrop']
        assert (resize.scale, resize.edge, crop.crop_size) == (256, 'short', 224), name
        assert ('LoadImageFromFile' in steps) == (dtype != 'CIFAR100'), name


def test_mae_rows_differ_from_in21k_rows_only_in_weights_normalisation_and_lr():
    for name in FGVC:
        mae, in21k = load_dict(fgvc_path('mae', name)), load_dict(fgvc_path('in21k', name))
        for cfg in (mae, in21k):
            cfg['model']['backbone'].pop('init_cfg')
            for key in ('mean', 'std'):
                cfg['data_preprocessor'].pop(key)
            for key in ('optim_wrapper', 'param_scheduler', 'lr', 'weight_decay'):
                cfg.pop(key)
        assert mae == in21k, name


def test_fgvc_model_builds_at_full_size():
    from mmpeft.utils.param_count import count_params
    b = count_params(build_meta(load(fgvc_path('in21k', 'nabirds'))))
    vtab = count_params(build_meta(load(osp.join(VTAB_DIR, 'vit-b_hst_vtab1k-cifar100.py'))))
    assert b['Encoder'] == vtab['Encoder']
    assert b['Heads']['trainable'] == 72 * 555 + 555


# --------------------------------------------------------------------------- shrunk rows that run
def shrink(cfg: Config) -> Config:
    """The same classes with a 4-layer width-32 ViT, side widths [8, 16, 16, 32], no checkpoint, and the
    plain optimizer wrapper (the configs' AMP needs a GPU)."""
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.update(vit_kwargs=TINY_VIT, init_cfg=None, embed_dims=[8, 16, 16, 32], num_heads=[1, 1, 2, 2])
    cfg.model.head.in_channels = 32
    cfg.optim_wrapper.type = 'OptimWrapper'
    cfg.optim_wrapper.pop('loss_scale')
    return cfg


def test_shrunk_vtab_row_trains_two_iterations(tmp_path):
    """KITTI's row (lr 5e-3, drop path 0.1), its pipeline and schedule, through mmengine's Runner:
    2 iterations (4 images, batch 2), then validation on the test list."""
    from mmengine.runner import Runner
    root = str(tmp_path / 'vtab-1k')
    write_vtab_task(root, 'kitti', 4, n_train=4, n_test=2)
    cfg = shrink(load(osp.join(VTAB_DIR, 'vit-b_hst_vtab1k-kitti.py')))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].update(batch_size=2, num_workers=0, persistent_workers=False)
        cfg[key].dataset.data_root = root
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    model = runner.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    runner.train()
    assert runner.iter == 2
    lr = 5e-3
    # warm-up from 1e-7, per iteration over the 10 epochs x 2 iterations = 20 of the window: mmengine's
    # LinearLR is linear in t / (20 - 1) (the full lr at the window's last iteration)
    logged = list(runner.message_hub.get_scalar('train/lr').data[0])
    assert logged == pytest.approx([1e-7, 1e-7 + (lr - 1e-7) / 19], rel=1e-6)
    for n, p in model.named_parameters():
        moved = not torch.equal(p.detach(), before[n])
        # a key bias adds q . b_k to every logit of a softmax row: no gradient, and it starts at zero
        should_move = p.requires_grad and not n.endswith('attn.k.bias')
        assert moved == should_move, f'{n}: requires_grad={p.requires_grad} but moved={moved}'
    # validated on the two test images
    assert runner.message_hub.get_scalar('val/accuracy/top1').current() in (0.0, 50.0, 100.0)
    # the training batch statistics reached the released pooled BatchNorm1d
    assert model.backbone.fc_norm.num_batches_tracked.item() == 2


def test_shrunk_fgvc_row_mixes_and_smooths_labels():
    """CUB's row: the data preprocessor mixes each batch (mixup or cutmix: soft targets summing to one,
    two classes per image) and the loss is label smoothing 0.1 of the mixed targets, by hand."""
    from mmpretrain.structures import DataSample

    from mmpeft.registry import MODELS
    cfg = shrink(load(fgvc_path('in21k', 'cub200')))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.data_preprocessor = copy.deepcopy(cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        torch.manual_seed(0)
        model = MODELS.build(model_cfg)
    g = torch.Generator().manual_seed(0)
    data = dict(inputs=[torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8) for _ in range(4)],
                data_samples=[DataSample().set_gt_label(c) for c in (3, 17, 42, 199)])
    model.train()
    batch = model.data_preprocessor(data, training=True)
    target = torch.stack([s.gt_score for s in batch['data_samples']])
    assert target.shape == (4, 200)
    torch.testing.assert_close(target.sum(1), torch.ones(4))
    assert ((target > 0).sum(1) <= 2).all()  # each image's own class and its partner's
    logits = model(batch['inputs'], mode='tensor')
    smoothed = 0.9 * target + 0.1 / 200
    by_hand = -(smoothed * torch.log_softmax(logits, dim=1)).sum(1).mean()
    loss = model(**batch, mode='loss')['loss']
    torch.testing.assert_close(loss, by_hand)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- the sweep scripts
def sweep(script: str, *args, work_root: str, dry_run: bool = True):
    import subprocess
    env = dict(os.environ, WORK_ROOT=work_root, DRY_RUN='1' if dry_run else '0')
    return subprocess.run(['bash', osp.join(ROOT, 'tools', 'hst', script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_sweeps_plan_every_config_and_resume_config_by_config(tmp_path):
    """DRY_RUN=1 prints the commands: every config of the family is trained (distributed on GPUS > 1)
    then tested; one with test metrics is skipped, one whose training finished is only tested."""
    wr = str(tmp_path / 'work')
    prefix = 'configs/hst/vtab1k/vit-b_hst_vtab1k-'
    done, trained = 'vit-b_hst_vtab1k-dtd', 'vit-b_hst_vtab1k-svhn'
    os.makedirs(osp.join(wr, done))
    with open(osp.join(wr, done, 'test_metrics.json'), 'w') as f:
        f.write('{"accuracy/top1": 75.25}')
    os.makedirs(osp.join(wr, trained))
    with open(osp.join(wr, trained, 'train_done'), 'w') as f:
        f.write(f'{wr}/{trained}/epoch_100.pth')
    res = sweep('run_vtab.sh', prefix, '2', 'train_dataloader.dataset.data_root=/data/v', work_root=wr)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    trains = [line for line in out if line.startswith('+ ') and 'dist_train.sh' in line]
    tests = [line for line in out if line.startswith('+ ') and 'dist_test.sh' in line]
    assert len(trains) == 17 and len(tests) == 18  # 19 tasks, one done, one trained
    assert not any(done in line for line in trains + tests) and not any(trained in line for line in trains)
    first = trains[0].split()
    at = next(i for i, word in enumerate(first) if word.endswith('tools/dist_train.sh'))
    assert first[at + 1:at + 3] == [f'{prefix}caltech101.py', '2']
    assert '--resume' in first and first[-2:] == ['--cfg-options', 'train_dataloader.dataset.data_root=/data/v']
    test_svhn = next(line for line in tests if trained in line).split()
    assert f'{wr}/{trained}/epoch_100.pth' in test_svhn
    assert test_svhn[test_svhn.index('--out') + 1] == f'{wr}/{trained}/test_metrics.json'
    assert any(line.split() == [done, 'accuracy/top1:', '75.25'] for line in out)  # the summary
    assert 'warning' not in res.stderr
    # one GPU: tools/train.py / test.py, and a warning that the total batch is not the recipe's
    res = sweep('run_fgvc.sh', 'configs/hst/fgvc/vit-b-mae_hst_', '1', work_root=wr)
    assert res.returncode == 0 and 'configs\' batch_size is per GPU for 4 GPUs' in res.stderr
    assert sum(line.startswith('+ ') and 'tools/train.py' in line for line in res.stdout.splitlines()) == 6
    # usage errors name the problem
    res = sweep('run_vtab.sh', 'configs/hst/vtab1k/nothing-', '2', work_root=wr)
    assert res.returncode == 2 and 'no config matches configs/hst/vtab1k/nothing-*.py' in res.stderr
    res = sweep('run_vtab.sh', prefix, '2', '--amp', work_root=wr)
    assert res.returncode == 2 and "KEY=VALUE pairs, got '--amp'" in res.stderr
