# HST paper comparison row "SSF" (Table 4, ViT-B, Cascade Mask R-CNN 3x+MS, COCO):
# #Param 65.6M trainable, 44.2 AP^b / 38.6 AP^m.
# SSF: scale and shift after every linear, LayerNorm and the patch embedding (mergeable).
# Model, data, schedule and optimiser: ./_base_/peft_cascade-mask-rcnn_vit-b_3x-ms_coco.py
_base_ = ['./_base_/peft_cascade-mask-rcnn_vit-b_3x-ms_coco.py']

model = dict(backbone=dict(method=dict(type='SSF')))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.ssf\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
