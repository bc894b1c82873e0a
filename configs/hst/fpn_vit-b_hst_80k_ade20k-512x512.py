# HST with a frozen ImageNet-21k ViT-B/16: Semantic FPN, 80k iterations, ADE20K 512x512.
# Paper Table 5 (14.7M trainable, 44.3 mIoU). Appendix B.2.3: PVT's [45] settings -- AdamW, lr 1e-4,
# weight decay 1e-4, poly decay with power 0.9, batch 16 (4 GPUs x 4) -- for 80k iterations.
_base_ = ['mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py', './_base_/hst_vit-b_dense.py']

model = dict(
    data_preprocessor={{_base_.hst_data_preprocessor}},
    pretrained=None,  # the base's ResNet weights; HSTViT loads its ViT through init_cfg
    backbone={{_base_.hst_backbone}},
    neck=dict(in_channels=[64, 128, 256, 384]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='TrainableOnlyOptimWrapperConstructor',  # trainable parameters only, even with the global fix off
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg={{_base_.hst_paramwise_cfg}})
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=80000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=8000))
