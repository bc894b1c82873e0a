# HST paper comparison row "AdaptFormer" (Table 4, ViT-B, Cascade Mask R-CNN 3x+MS, COCO):
# #Param 66.8M trainable, 45.1 AP^b / 39.2 AP^m.
# AdaptFormer-64: a bottleneck of 64 beside every MLP, scale 0.1.
# Model, data, schedule and optimiser: ./_base_/peft_cascade-mask-rcnn_vit-b_3x-ms_coco.py
_base_ = ['./_base_/peft_cascade-mask-rcnn_vit-b_3x-ms_coco.py']

model = dict(backbone=dict(method=dict(type='AdaptFormer', hidden_dims=64, scale=0.1)))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.adapter_mlp\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
