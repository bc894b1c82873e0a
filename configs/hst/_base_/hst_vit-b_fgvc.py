# HST on the FGVC datasets and full CIFAR-100 (paper Table 3): the shared part of the rows in
# configs/hst/fgvc/. Recipe of the authors' FGVC / CIFAR-100 scripts (train_scripts/vit/fgvc/*,
# train_scripts/vit/cifar_100/*): 4 GPUs x 32 images (total batch 128; batch_size below is per GPU),
# training augmentation RandomResizedCrop(224) + horizontal flip, and the training script's defaults they
# leave on: mixup 0.8 and cutmix 1.0 (one of the two per batch, as timm's switch probability 0.5), label
# smoothing 0.1 (of the mixed targets, as timm's Mixup does); test: the short side resized to
# 224 / 0.875 = 256, centre crop 224; drop path 0. in21k normalisation mean = std = 0.5 (the MAE rows
# change it). Each row sets the dataset, its classes, lr and weight decay.
# Data: the VPT release's JSON splits (mmpeft.datasets.fgvc); trained on train.json + val.json (the
# official training set, which the authors' loaders read), reported on test.json.
_base_ = ['./hst_vit-b_cls.py']

model = dict(
    head=dict(loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original', loss_weight=1.0)),
    # mmpretrain's batch augments: one of them, chosen uniformly, per batch
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

# the in21k ViTs were pretrained on pixels scaled to [-1, 1]; LoadImageFromFile gives BGR
data_preprocessor = dict(num_classes=None, mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, interpolation='bicubic', backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', interpolation='bicubic', backend='pillow'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,  # per GPU, 4 GPUs
    num_workers=8,
    persistent_workers=True,
    drop_last=True,  # as the scripts' loader; also keeps every batch > 1 image for the pooled BatchNorm1d
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=None, data_root=None, split='trainval', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=None, data_root=None, split='test', pipeline=test_pipeline, test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
