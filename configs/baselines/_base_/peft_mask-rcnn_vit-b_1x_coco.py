# Shared part of the HST paper's ViT-B comparison rows (Table 4, Mask R-CNN 1x, COCO): the frozen
# ImageNet-21k ViT-B/16 + a PEFT method, and [29]'s simple multi-scale adaptation of the last feature
# map (mmpeft's ViTPyramid: deconvolutions / identity / max-pool to strides 4-32, trainable, as in the
# linear-probing row configs/baselines/linear-probe_mask-rcnn_vit-b_1x_coco.py); FPN and heads train.
# Optimiser of appendix B.2.2: AdamW, lr 1e-4, weight decay 0.05, batch 16.
# Not a row itself: each row (configs/baselines/*_mask-rcnn_vit-b_1x_coco.py) sets its method.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

model = dict(
    # the in21k ViTs were pretrained on pixels scaled to [-1, 1]
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
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
    neck=dict(in_channels=[768, 768, 768, 768]))

# constructor: optimizer of the trainable parameters only (see configs/_base_/schedules/polyhistor_60e.py)
optim_wrapper = dict(
    constructor='TrainableOnlyOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
