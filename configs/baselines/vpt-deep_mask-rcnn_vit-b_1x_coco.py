# HST paper comparison row "VPT-deep" (Table 4, ViT-B, Mask R-CNN 1x: 28.4M trainable, 31.1 AP^b / 30.5 AP^m).
# VPT-deep: 64 new prompt tokens at every block (token insertion; the HST appendix's VPT uses 64).
# Frozen ViT-B/16 + the method, [29]'s pyramid, decoders, optimiser: ./_base_/peft_mask-rcnn_vit-b_1x_coco.py
_base_ = ['./_base_/peft_mask-rcnn_vit-b_1x_coco.py']

model = dict(backbone=dict(method=dict(type='VPTDeep', num_tokens=64)))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.vpt\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
