# HST paper comparison row "Linear probing" (Table 4, ViT-B, Mask R-CNN 3x+MS, COCO):
# #Param 27.8M trainable, 25.0 AP^b / 24.9 AP^m.
# Linear probing: the ViT frozen; only [29]'s pyramid modules and the decoders train.
# Model, data, schedule and optimiser: ./_base_/peft_mask-rcnn_vit-b_3x-ms_coco.py
_base_ = ['./_base_/peft_mask-rcnn_vit-b_3x-ms_coco.py']

model = dict(backbone=dict(method=dict(type='FrozenBackbone')))
