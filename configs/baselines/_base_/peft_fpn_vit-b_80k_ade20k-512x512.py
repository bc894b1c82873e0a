# Shared part of the HST paper's ViT-B comparison rows on Semantic FPN 80k (Table 5, ADE20K 512x512): the
# HST row ../../hst/fpn_vit-b_hst_80k_ade20k-512x512.py (PVT's settings of appendix B.2.3: AdamW, lr 1e-4,
# weight decay 1e-4, poly 0.9, 80k iterations) with its HSTViT replaced by the ViT-B/16 + a PEFT method +
# [29]'s pyramid (./peft_vit-b_dense.py).
# Not a row itself: each row (configs/baselines/*_fpn_vit-b_80k_ade20k-512x512.py) sets its method.
_base_ = ['../../hst/fpn_vit-b_hst_80k_ade20k-512x512.py', './peft_vit-b_dense.py']

model = dict(backbone={{_base_.peft_vit_backbone}}, neck=dict(in_channels={{_base_.peft_vit_channels}}))
optim_wrapper = dict(paramwise_cfg={{_base_.peft_vit_paramwise_cfg}})
custom_hooks = [{{_base_.peft_vit_trainable_hook}}]
