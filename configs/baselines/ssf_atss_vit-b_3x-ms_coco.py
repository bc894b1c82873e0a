# HST paper comparison row "SSF" (Table 4, ViT-B, ATSS 3x+MS, COCO): #Param 15.8M trainable, 37.8 AP^b.
# SSF: scale and shift after every linear, LayerNorm and the patch embedding (mergeable).
# Model, data, schedule and optimiser: ./_base_/peft_atss_vit-b_3x-ms_coco.py
_base_ = ['./_base_/peft_atss_vit-b_3x-ms_coco.py']

model = dict(backbone=dict(method=dict(type='SSF')))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.ssf\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
