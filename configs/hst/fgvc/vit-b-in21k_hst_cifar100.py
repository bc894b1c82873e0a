# HST (frozen ViT-B/16 in21k) on CIFAR-100 (full), 100 classes.
# Paper Table 3: 93.6% top-1 (in21k), 0.78M trainable.
# Recipe: the authors' in21k script for this dataset (lr 5e-3, weight decay 5e-2); the rest is
# _base_/hst_vit-b_fgvc.py (4 GPUs x 32, 100 epochs, RandomResizedCrop + flip, mixup / cutmix, label
# smoothing 0.1). Data: the CIFAR-100 python release (50,000 training / 10,000 test images of 32 x 32).
_base_ = ['../_base_/hst_vit-b_fgvc.py']

data_root = 'data/cifar100'
num_classes = 100
lr = 5e-3
weight_decay = 5e-2

model = dict(head=dict(num_classes=num_classes))
optim_wrapper = dict(optimizer=dict(lr=lr, weight_decay=weight_decay))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-7 / lr, by_epoch=True, begin=0, end=10, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-8, by_epoch=True, begin=10, end=100, convert_to_iter_based=True),
]
# the python pickle release read by mmpretrain's CIFAR100: <data_root>/cifar-100-python/{train,test,meta}
# (nothing is downloaded). Its images are RGB arrays: no LoadImageFromFile, no channel swap.
data_preprocessor = dict(num_classes=num_classes, to_rgb=False)
train_pipeline = [
    dict(type='RandomResizedCrop', scale=224, interpolation='bicubic', backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='ResizeEdge', scale=256, edge='short', interpolation='bicubic', backend='pillow'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(_delete_=True, type='CIFAR100', data_root=data_root, split='train',
                                     download=False, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(_delete_=True, type='CIFAR100', data_root=data_root, split='test',
                                   download=False, pipeline=test_pipeline, test_mode=True))
test_dataloader = val_dataloader
