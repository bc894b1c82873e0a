# HST on Stanford Dogs with the MAE ViT-B/16 (paper footnote 2) as the frozen ViT. Paper Table 3: 86.4% top-1 (MAE).
# As the in21k row except the weights, ImageNet mean / std normalisation and the authors' MAE script's
# lr 1e-3, weight decay 5e-2. Weights: pretrain/mae_pretrain_vit_base.pth
# (https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth).
_base_ = ['./vit-b-in21k_hst_stanford-dogs.py']

lr = 1e-3
weight_decay = 5e-2

model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='pretrain/mae_pretrain_vit_base.pth')))
# MAE was pretrained on ImageNet-normalised pixels (RGB order)
data_preprocessor = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
optim_wrapper = dict(optimizer=dict(lr=lr, weight_decay=weight_decay))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-7 / lr, by_epoch=True, begin=0, end=10, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-8, by_epoch=True, begin=10, end=100, convert_to_iter_based=True),
]
