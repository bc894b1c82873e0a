# HST paper comparison row "AdaptFormer" (Table 5, ViT-B, UperNet 160k, ADE20K: 42.4M trainable, 43.4 mIoU).
# AdaptFormer-64: a bottleneck of 64 beside every MLP, scale 0.1.
# Frozen ViT-B/16 + the method, [29]'s pyramid, decoders, optimiser: ./_base_/peft_upernet_vit-b_160k_ade20k-512x512.py
_base_ = ['./_base_/peft_upernet_vit-b_160k_ade20k-512x512.py']

model = dict(backbone=dict(method=dict(type='AdaptFormer', hidden_dims=64, scale=0.1)))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.adapter_mlp\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
