# HST paper comparison row "AdaptFormer" (Table 4, ViT-B, ATSS 3x+MS, COCO): #Param 16.7M trainable, 38.4 AP^b.
# AdaptFormer-64: a bottleneck of 64 beside every MLP, scale 0.1.
# Model, data, schedule and optimiser: ./_base_/peft_atss_vit-b_3x-ms_coco.py
_base_ = ['./_base_/peft_atss_vit-b_3x-ms_coco.py']

model = dict(backbone=dict(method=dict(type='AdaptFormer', hidden_dims=64, scale=0.1)))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.adapter_mlp\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
