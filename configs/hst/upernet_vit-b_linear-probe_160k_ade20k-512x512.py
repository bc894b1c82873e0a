# Comparison row (paper Table 5, "Linear probing", 41.2M): frozen ImageNet-21k ViT-B/16 with [29]'s
# simple multi-scale adaptation (mmpeft's ViTPyramid); UperNet 160k, same optimiser as the HST row.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ViTPyramid',
        vit_name='vit_base_patch16_224',
        finetune='linear_probe',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/jx_vit_base_patch16_224_in21k.pth')),
    decode_head=dict(in_channels=[768, 768, 768, 768]),
    auxiliary_head=dict(in_channels=768))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='TrainableOnlyOptimWrapperConstructor',  # trainable parameters only, even with the global fix off
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.'],
         expect_frozen=[r'backbone\.vit\.']),
]
