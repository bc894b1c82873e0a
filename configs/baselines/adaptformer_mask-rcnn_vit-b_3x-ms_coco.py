# HST paper comparison row "AdaptFormer" (Table 4, ViT-B, Mask R-CNN 3x+MS, COCO):
# #Param 29.0M trainable, 36.7 AP^b / 35.1 AP^m.
# AdaptFormer-64: a bottleneck of 64 beside every MLP, scale 0.1.
# Model, data, schedule and optimiser: ./_base_/peft_mask-rcnn_vit-b_3x-ms_coco.py
_base_ = ['./_base_/peft_mask-rcnn_vit-b_3x-ms_coco.py']

model = dict(backbone=dict(method=dict(type='AdaptFormer', hidden_dims=64, scale=0.1)))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.adapter_mlp\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
