# HST paper comparison row "Full fine-tuning" (Table 5, ViT-B, Semantic FPN 80k, ADE20K):
# #Param 97.7M trainable, 46.0 mIoU, 47.2 +MS.
# Full fine-tuning: the ViT trains too (no weight decay on norms / position embedding / class token, as the
# 1x row configs/hst/mask-rcnn_vit-b_full-ft_1x_coco.py).
# Model, data, schedule and optimiser: ./_base_/peft_fpn_vit-b_80k_ade20k-512x512.py
_base_ = ['./_base_/peft_fpn_vit-b_80k_ade20k-512x512.py']

model = dict(backbone=dict(method=dict(type='FullFinetune')))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.), 'cls_token': dict(decay_mult=0.)}))

custom_hooks = [dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.'])]
