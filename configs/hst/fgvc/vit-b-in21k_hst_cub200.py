# HST (frozen ViT-B/16 in21k) on CUB-200-2011, 200 classes.
# Paper Table 3: 89.2% top-1 (in21k), 0.78M trainable.
# Recipe: the authors' in21k script for this dataset (lr 1e-3, weight decay 5e-2); the rest is
# _base_/hst_vit-b_fgvc.py (4 GPUs x 32, 100 epochs, RandomResizedCrop + flip, mixup / cutmix, label
# smoothing 0.1). Data: the VPT release's JSON splits under
# data/fgvc/CUB_200_2011/ (mmpeft.datasets.CUB200Dataset).
_base_ = ['../_base_/hst_vit-b_fgvc.py']

data_root = 'data/fgvc/CUB_200_2011'
num_classes = 200
lr = 1e-3
weight_decay = 5e-2

model = dict(head=dict(num_classes=num_classes))
optim_wrapper = dict(optimizer=dict(lr=lr, weight_decay=weight_decay))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-7 / lr, by_epoch=True, begin=0, end=10, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-8, by_epoch=True, begin=10, end=100, convert_to_iter_based=True),
]
data_preprocessor = dict(num_classes=num_classes)
train_dataloader = dict(dataset=dict(type='CUB200Dataset', data_root=data_root))
val_dataloader = dict(dataset=dict(type='CUB200Dataset', data_root=data_root))
test_dataloader = val_dataloader
