# HST paper comparison row "Linear probing" (Table 5, ViT-B, Semantic FPN 80k, ADE20K):
# #Param 11.9M trainable, 34.2 mIoU, 36.5 +MS.
# Linear probing: the ViT frozen; only [29]'s pyramid modules and the decoders train.
# Model, data, schedule and optimiser: ./_base_/peft_fpn_vit-b_80k_ade20k-512x512.py
_base_ = ['./_base_/peft_fpn_vit-b_80k_ade20k-512x512.py']

model = dict(backbone=dict(method=dict(type='FrozenBackbone')))
