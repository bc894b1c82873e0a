# HST with a frozen ImageNet-21k ViT-L/16: Mask R-CNN, 1x schedule, COCO. Paper Table 4 (ViT-L rows:
# 45.5 AP^b / 41.5 AP^m). The side network keeps the ViT-B dims; its 24 Side blocks are 6 per stage,
# fed by ViT layers 0-5, 6-11, 12-17, 18-23 (Table 1).
# Weights: the ImageNet-21k ViT-L/16 of timm's v0.1-vitjx release (jx_vit_large_patch16_224_in21k-*.pth), saved as
# pretrain/jx_vit_large_patch16_224_in21k.pth.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        _delete_=True,
        type='HSTViT',
        vit_name='vit_large_patch16_224',
        embed_dims=[64, 128, 256, 384],
        num_heads=[2, 4, 8, 12],
        num_meta_tokens=1,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/jx_vit_large_patch16_224_in21k.pth')),
    neck=dict(in_channels=[64, 128, 256, 384]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.), 'meta_tokens': dict(decay_mult=0.)}))

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\.side_network\.', r'backbone\.bridge\.', r'backbone\.meta_tokens'],
         expect_frozen=[r'backbone\.vit\.(cls_token|pos_embed|patch_embed|norm\.)',
                        r'backbone\.vit\.blocks\.\d+\.(attn|mlp)\.']),
]
