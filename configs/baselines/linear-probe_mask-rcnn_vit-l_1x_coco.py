# HST paper comparison row "Linear probing" (Table 4, ViT-L, Mask R-CNN 1x, COCO):
# #Param 33.6M trainable, 31.6 AP^b / 31.3 AP^m.
# Linear probing: the ViT frozen; only [29]'s pyramid modules and the decoders train.
# Model, data, schedule and optimiser: ./_base_/peft_mask-rcnn_vit-l_1x_coco.py
_base_ = ['./_base_/peft_mask-rcnn_vit-l_1x_coco.py']

model = dict(backbone=dict(method=dict(type='FrozenBackbone')))
