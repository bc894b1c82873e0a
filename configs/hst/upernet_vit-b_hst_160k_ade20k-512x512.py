# HST with a frozen ImageNet-21k ViT-B/16: UperNet, 160k iterations, ADE20K 512x512.
# Paper Table 5 (39.9M trainable, 47.0 mIoU). Appendix B.2.3: Swin's [34] settings -- AdamW, lr 6e-5,
# betas (0.9, 0.999), weight decay 0.01, no decay on norms, 1500 iterations of linear warm-up then
# linear (poly, power 1) decay, batch 16 (here 4 GPUs x 4, as the mmseg base).
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py', './_base_/hst_vit-b_dense.py']

model = dict(
    data_preprocessor={{_base_.hst_data_preprocessor}},
    pretrained=None,
    backbone={{_base_.hst_backbone}},
    decode_head=dict(in_channels=[64, 128, 256, 384]),
    auxiliary_head=dict(in_channels=256))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='TrainableOnlyOptimWrapperConstructor',  # trainable parameters only, even with the global fix off
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg={{_base_.hst_paramwise_cfg}})
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
