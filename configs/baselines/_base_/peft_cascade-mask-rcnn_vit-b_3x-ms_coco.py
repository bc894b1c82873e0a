# Shared part of the HST paper's ViT-B comparison rows on Cascade Mask R-CNN 3x+MS (Table 4, COCO): the
# HST row ../../hst/cascade-mask-rcnn_vit-b_hst_3x-ms_coco.py (multi-scale training, 3x schedule, the
# "4conv1fc" GIoU box heads, optimiser of appendix B.2.2) with its HSTViT replaced by the ViT-B/16 + a
# PEFT method + [29]'s pyramid (./peft_vit-b_dense.py).
# Not a row itself: each row (configs/baselines/*_cascade-mask-rcnn_vit-b_3x-ms_coco.py) sets its method.
_base_ = ['../../hst/cascade-mask-rcnn_vit-b_hst_3x-ms_coco.py', './peft_vit-b_dense.py']

model = dict(backbone={{_base_.peft_vit_backbone}}, neck=dict(in_channels={{_base_.peft_vit_channels}}))
optim_wrapper = dict(paramwise_cfg={{_base_.peft_vit_paramwise_cfg}})
custom_hooks = [{{_base_.peft_vit_trainable_hook}}]
