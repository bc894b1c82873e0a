# HST paper comparison row "SSF" (Table 4, ViT-B, Mask R-CNN 1x: 28.0M trainable, 35.6 AP^b / 34.4 AP^m).
# SSF: scale and shift after every linear, LayerNorm and the patch embedding (mergeable).
# Frozen ViT-B/16 + the method, [29]'s pyramid, decoders, optimiser: ./_base_/peft_mask-rcnn_vit-b_1x_coco.py
_base_ = ['./_base_/peft_mask-rcnn_vit-b_1x_coco.py']

model = dict(backbone=dict(method=dict(type='SSF')))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.ssf\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
