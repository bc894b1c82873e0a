# HST paper comparison row "LoRA" (Table 5, ViT-B, UperNet 160k, ADE20K: 41.8M trainable, 44.9 mIoU).
# LoRA on W_q and W_v of every block, rank 16, scale 1 (mergeable). The tables add 0.6M over
# linear probing for ViT-B (rank 16 on q and v: 0.59M), though the detection row is labelled "LoRA-32".
# Frozen ImageNet-21k ViT-B/16 + the method, and [29]'s simple multi-scale adaptation (mmpeft's
# ViTPyramid, trainable, as in configs/baselines/linear-probe_upernet_vit-b_160k_ade20k-512x512.py);
# UperNet heads train. Optimiser as the HST row (Swin's settings, appendix B.2.3).
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

model = dict(
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
        method=dict(type='LoRA', rank=16, scaling=1.0, targets=('q', 'v')),
        extra_trainable=[r'fpn[12]\.']),
    decode_head=dict(in_channels=[768, 768, 768, 768]),
    auxiliary_head=dict(in_channels=768))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.lora_[qv]\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
