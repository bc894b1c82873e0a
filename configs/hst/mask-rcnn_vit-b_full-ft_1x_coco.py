# Comparison row (paper Table 4, "Full fine-tuning", 113.6M): the ImageNet-21k ViT-B/16 trains too,
# with [29]'s simple multi-scale adaptation (mmpeft's ViTPyramid). Mask R-CNN 1x, same optimiser as
# the HST row, no weight decay on norms / position embedding / tokens.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        _delete_=True,
        type='ViTPyramid',
        vit_name='vit_base_patch16_224',
        finetune='full',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/jx_vit_base_patch16_224_in21k.pth')),
    neck=dict(in_channels=[768, 768, 768, 768]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.), 'pos_embed': dict(decay_mult=0.),
                                    'cls_token': dict(decay_mult=0.)}))

custom_hooks = [dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.'])]
