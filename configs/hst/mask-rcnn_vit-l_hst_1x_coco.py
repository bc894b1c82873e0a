# HST with a frozen ImageNet-21k ViT-L/16: Mask R-CNN, 1x schedule, COCO. Paper Table 4 (ViT-L rows:
# 45.5 AP^b / 41.5 AP^m). The side network keeps the ViT-B dims; its 24 Side blocks are 6 per stage,
# fed by ViT layers 0-5, 6-11, 12-17, 18-23 (Table 1).
# Weights: the ImageNet-21k ViT-L/16 of timm's v0.1-vitjx release (jx_vit_large_patch16_224_in21k-*.pth), saved as
# pretrain/jx_vit_large_patch16_224_in21k.pth.
_base_ = ['./mask-rcnn_vit-b_hst_1x_coco.py']

model = dict(
    backbone=dict(
        vit_name='vit_large_patch16_224',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='pretrain/jx_vit_large_patch16_224_in21k.pth')))
