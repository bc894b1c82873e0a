# HST paper comparison row "VPT-deep" (Table 4, ViT-B, Cascade Mask R-CNN 3x+MS, COCO):
# #Param 66.2M trainable, 42.2 AP^b / 37.1 AP^m.
# VPT-deep: 64 new prompt tokens at every block (token insertion; the HST appendix's VPT uses 64).
# Model, data, schedule and optimiser: ./_base_/peft_cascade-mask-rcnn_vit-b_3x-ms_coco.py
_base_ = ['./_base_/peft_cascade-mask-rcnn_vit-b_3x-ms_coco.py']

model = dict(backbone=dict(method=dict(type='VPTDeep', num_tokens=64)))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.vpt\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
