# Comparison row (paper Table 4, "Linear probing", 27.8M): frozen ImageNet-21k ViT-B/16 with [29]'s
# simple multi-scale adaptation (deconvolutions / max-pool on the last layer, mmpeft's ViTPyramid);
# only the pyramid modules, FPN and heads train. Mask R-CNN 1x, same optimiser as the HST row.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        _delete_=True,
        type='ViTPyramid',
        vit_name='vit_base_patch16_224',
        finetune='linear_probe',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/jx_vit_base_patch16_224_in21k.pth')),
    neck=dict(in_channels=[768, 768, 768, 768]))

# constructor: optimizer of the trainable parameters only (see configs/_base_/schedules/polyhistor_60e.py)
optim_wrapper = dict(
    constructor='TrainableOnlyOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.'],
         expect_frozen=[r'backbone\.vit\.']),
]
