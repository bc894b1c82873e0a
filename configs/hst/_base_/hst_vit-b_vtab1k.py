# HST on VTAB-1k (paper Table 2): the shared part of the 19 task rows in configs/hst/vtab1k/.
# Recipe of the authors' VTAB-1k scripts (train_scripts/vit/vtab/<task>/train_s4.sh): 2 GPUs x 32 images
# (total batch 64; batch_size below is per GPU), train on train800val200 (1000 images), report on test;
# no augmentation (--no-aug --direct-resize): the short side resized to 224, centre crop 224, for training
# and testing; no mixup / cutmix / label smoothing (plain cross-entropy). in21k normalisation: mean = std
# = 0.5 (127.5 in pixel units). Each row sets the task, its classes, lr, weight decay and drop path.
# Data: the extracted VTAB-1k release, <data_root>/<task>/{images/, train800val200.txt, test.txt}
# (mmpeft.datasets.VTAB1kDataset).
_base_ = ['./hst_vit-b_cls.py']

data_root = 'data/vtab-1k'

# the in21k ViTs were pretrained on pixels scaled to [-1, 1]; LoadImageFromFile gives BGR
data_preprocessor = dict(num_classes=None, mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], to_rgb=True)

pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=224, edge='short', interpolation='bilinear', backend='pillow'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,  # per GPU, 2 GPUs
    num_workers=4,
    persistent_workers=True,
    drop_last=True,  # as the scripts' loader; also keeps every batch > 1 image for the pooled BatchNorm1d
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='VTAB1kDataset', data_root=data_root, task=None, split='train800val200',
                 num_classes=None, pipeline=pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='VTAB1kDataset', data_root=data_root, task=None, split='test',
                 num_classes=None, pipeline=pipeline, test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
# the test sets are large (dSprites: 73,728 images): validate every 25 epochs, not every 10
train_cfg = dict(val_interval=25)
