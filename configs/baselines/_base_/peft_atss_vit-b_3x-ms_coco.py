# Shared part of the HST paper's ViT-B comparison rows on ATSS 3x+MS (Table 4, COCO): the HST row
# ../../hst/atss_vit-b_hst_3x-ms_coco.py (multi-scale training, 36 epochs, optimiser of appendix B.2.2)
# with its HSTViT replaced by the ViT-B/16 + a PEFT method + [29]'s pyramid (./peft_vit-b_dense.py).
# Not a row itself: each row (configs/baselines/*_atss_vit-b_3x-ms_coco.py) sets its method.
_base_ = ['../../hst/atss_vit-b_hst_3x-ms_coco.py', './peft_vit-b_dense.py']

model = dict(backbone={{_base_.peft_vit_backbone}}, neck=dict(in_channels={{_base_.peft_vit_channels}}))
optim_wrapper = dict(paramwise_cfg={{_base_.peft_vit_paramwise_cfg}})
custom_hooks = [{{_base_.peft_vit_trainable_hook}}]

# ATSS's neck starts at stride 8 (start_level=1), so the stride-4 module fpn1 (4.72M) gets no gradient;
# the paper's #Param counts it (without it linear probing would be 10.8M, not 15.6M), so it stays
# trainable, and DDP must be told that a trainable parameter may be unused
find_unused_parameters = True
