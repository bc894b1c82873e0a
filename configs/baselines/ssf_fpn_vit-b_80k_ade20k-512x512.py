# HST paper comparison row "SSF" (Table 5, ViT-B, Semantic FPN 80k, ADE20K):
# #Param 12.1M trainable, 44.2 mIoU, 44.6 +MS.
# SSF: scale and shift after every linear, LayerNorm and the patch embedding (mergeable).
# Model, data, schedule and optimiser: ./_base_/peft_fpn_vit-b_80k_ade20k-512x512.py
_base_ = ['./_base_/peft_fpn_vit-b_80k_ade20k-512x512.py']

model = dict(backbone=dict(method=dict(type='SSF')))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.ssf\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
