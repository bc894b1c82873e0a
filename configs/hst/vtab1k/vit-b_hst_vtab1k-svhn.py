# HST-B (ViT-B/16 in21k, frozen) on VTAB-1k SVHN (natural, 10 classes). Paper Table 2: 91.2% top-1.
# Recipe: the authors' script for this task (lr 1e-2, weight decay 5e-5, drop path 0.1); the rest is
# _base_/hst_vit-b_vtab1k.py (2 GPUs x 32, 100 epochs, no augmentation). Data: <data_root>/svhn/.
_base_ = ['../_base_/hst_vit-b_vtab1k.py']

task = 'svhn'
num_classes = 10
lr = 1e-2
weight_decay = 5e-5
drop_path = 0.1

model = dict(backbone=dict(drop_path_rate=drop_path), head=dict(num_classes=num_classes))
data_preprocessor = dict(num_classes=num_classes)
optim_wrapper = dict(optimizer=dict(lr=lr, weight_decay=weight_decay))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-7 / lr, by_epoch=True, begin=0, end=10, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-8, by_epoch=True, begin=10, end=100, convert_to_iter_based=True),
]
train_dataloader = dict(dataset=dict(task=task, num_classes=num_classes))
val_dataloader = dict(dataset=dict(task=task, num_classes=num_classes))
test_dataloader = val_dataloader
