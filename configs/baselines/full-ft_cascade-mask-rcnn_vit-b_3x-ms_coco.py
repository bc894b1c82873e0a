# HST paper comparison row "Full fine-tuning" (Table 4, ViT-B, Cascade Mask R-CNN 3x+MS, COCO):
# #Param 151.4M trainable, 48.7 AP^b / 42.2 AP^m.
# Full fine-tuning: the ViT trains too (no weight decay on norms / position embedding / class token, as the
# 1x row configs/hst/mask-rcnn_vit-b_full-ft_1x_coco.py).
# Model, data, schedule and optimiser: ./_base_/peft_cascade-mask-rcnn_vit-b_3x-ms_coco.py
_base_ = ['./_base_/peft_cascade-mask-rcnn_vit-b_3x-ms_coco.py']

model = dict(backbone=dict(method=dict(type='FullFinetune')))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.), 'cls_token': dict(decay_mult=0.)}))

custom_hooks = [dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.'])]
