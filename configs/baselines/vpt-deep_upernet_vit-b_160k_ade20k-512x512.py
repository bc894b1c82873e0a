# HST paper comparison row "VPT-deep" (Table 5, ViT-B, UperNet 160k, ADE20K: 41.8M trainable, 44.0 mIoU).
# VPT-deep: 64 new prompt tokens at every block (token insertion; the HST appendix's VPT uses 64).
# Frozen ViT-B/16 + the method, [29]'s pyramid, decoders, optimiser: ./_base_/peft_upernet_vit-b_160k_ade20k-512x512.py
_base_ = ['./_base_/peft_upernet_vit-b_160k_ade20k-512x512.py']

model = dict(backbone=dict(method=dict(type='VPTDeep', num_tokens=64)))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.vpt\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
