# Shared part of the HST paper's ViT-B comparison rows (Table 5, UperNet 160k, ADE20K 512x512): the
# frozen ImageNet-21k ViT-B/16 + a PEFT method, and [29]'s simple multi-scale adaptation (mmpeft's
# ViTPyramid, trainable, as in configs/baselines/linear-probe_upernet_vit-b_160k_ade20k-512x512.py);
# UperNet heads train. Optimiser as the HST row (Swin's settings, appendix B.2.3).
# Not a row itself: each row (configs/baselines/*_upernet_vit-b_160k_ade20k-512x512.py) sets its method.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

model = dict(
    # the in21k ViTs were pretrained on pixels scaled to [-1, 1]
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='PEFTBackbone',
        backbone=dict(
            type='ViTPyramid',
            vit_name='vit_base_patch16_224',
            finetune='full',  # the ViT runs with autograd; PEFTBackbone freezes all but the method
            out_indices=(0, 1, 2, 3),
            init_cfg=dict(type='Pretrained', checkpoint='pretrain/jx_vit_base_patch16_224_in21k.pth')),
        method=dict(type='FrozenBackbone'),  # placeholder: each row sets its method
        extra_trainable=[r'fpn[12]\.']),
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
