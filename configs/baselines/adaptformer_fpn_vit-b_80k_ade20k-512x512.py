# HST paper comparison row "AdaptFormer" (Table 5, ViT-B, Semantic FPN 80k, ADE20K):
# #Param 13.1M trainable, 42.8 mIoU, 43.0 +MS.
# AdaptFormer-64: a bottleneck of 64 beside every MLP, scale 0.1.
# Model, data, schedule and optimiser: ./_base_/peft_fpn_vit-b_80k_ade20k-512x512.py
_base_ = ['./_base_/peft_fpn_vit-b_80k_ade20k-512x512.py']

model = dict(backbone=dict(method=dict(type='AdaptFormer', hidden_dims=64, scale=0.1)))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.adapter_mlp\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
