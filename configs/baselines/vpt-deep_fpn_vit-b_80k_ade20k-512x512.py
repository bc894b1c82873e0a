# HST paper comparison row "VPT-deep" (Table 5, ViT-B, Semantic FPN 80k, ADE20K):
# #Param 12.5M trainable, 41.5 mIoU, 41.4 +MS.
# VPT-deep: 64 new prompt tokens at every block (token insertion; the HST appendix's VPT uses 64).
# Model, data, schedule and optimiser: ./_base_/peft_fpn_vit-b_80k_ade20k-512x512.py
_base_ = ['./_base_/peft_fpn_vit-b_80k_ade20k-512x512.py']

model = dict(backbone=dict(method=dict(type='VPTDeep', num_tokens=64)))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.vpt\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
