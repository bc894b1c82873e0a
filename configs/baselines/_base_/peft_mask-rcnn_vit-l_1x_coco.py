# Shared part of the HST paper's ViT-L comparison rows (Table 4, ViT-L, Mask R-CNN 1x, COCO): the ViT-B
# rows' base ./peft_mask-rcnn_vit-b_1x_coco.py (PEFTBackbone over ViTPyramid, [29]'s pyramid, optimiser of
# appendix B.2.2) with the ImageNet-21k ViT-L/16 of the HST ViT-L row (../../hst/mask-rcnn_vit-l_hst_1x_coco.py):
# timm's v0.1-vitjx jx_vit_large_patch16_224_in21k-*.pth, saved as pretrain/jx_vit_large_patch16_224_in21k.pth.
# Not a row itself: each row (configs/baselines/*_mask-rcnn_vit-l_1x_coco.py) sets its method.
_base_ = ['./peft_mask-rcnn_vit-b_1x_coco.py']

model = dict(
    backbone=dict(backbone=dict(vit_name='vit_large_patch16_224',
                                init_cfg=dict(checkpoint='pretrain/jx_vit_large_patch16_224_in21k.pth'))),
    neck=dict(in_channels=[1024, 1024, 1024, 1024]))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
