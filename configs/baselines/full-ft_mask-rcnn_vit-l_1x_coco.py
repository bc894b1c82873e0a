# HST paper comparison row "Full fine-tuning" (Table 4, ViT-L, Mask R-CNN 1x, COCO):
# #Param 337.3M trainable, 45.7 AP^b / 41.5 AP^m.
# Full fine-tuning: the ViT trains too (no weight decay on norms / position embedding / class token, as the
# 1x row configs/hst/mask-rcnn_vit-b_full-ft_1x_coco.py).
# Model, data, schedule and optimiser: ./_base_/peft_mask-rcnn_vit-l_1x_coco.py
_base_ = ['./_base_/peft_mask-rcnn_vit-l_1x_coco.py']

model = dict(backbone=dict(method=dict(type='FullFinetune')))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.), 'cls_token': dict(decay_mult=0.)}))

custom_hooks = [dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.'])]
