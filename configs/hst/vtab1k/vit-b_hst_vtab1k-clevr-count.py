# HST-B (ViT-B/16 in21k, frozen) on VTAB-1k Clevr/count (structured, 8 classes). Paper Table 2: 85.4% top-1.
# Recipe: the authors' script for this task (lr 1e-3, weight decay 5e-4, drop path 0.1); the rest is
# _base_/hst_vit-b_vtab1k.py (2 GPUs x 32, 100 epochs, no augmentation). Data: <data_root>/clevr_count/.
_base_ = ['../_base_/hst_vit-b_vtab1k.py']

task = 'clevr_count'
num_classes = 8
lr = 1e-3
weight_decay = 5e-4
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
