# HST paper comparison row "SSF" (Table 5, ViT-B, UperNet 160k, ADE20K: 41.4M trainable, 44.9 mIoU).
# SSF: scale and shift after every linear, LayerNorm and the patch embedding (mergeable).
# Frozen ViT-B/16 + the method, [29]'s pyramid, decoders, optimiser: ./_base_/peft_upernet_vit-b_160k_ade20k-512x512.py
_base_ = ['./_base_/peft_upernet_vit-b_160k_ade20k-512x512.py']

model = dict(backbone=dict(method=dict(type='SSF')))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.ssf\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
