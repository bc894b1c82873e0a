# HST paper comparison row "Linear probing" (Table 4, ViT-B, Cascade Mask R-CNN 3x+MS, COCO):
# #Param 65.6M trainable, 35.9 AP^b / 31.4 AP^m.
# Linear probing: the ViT frozen; only [29]'s pyramid modules and the decoders train.
# Model, data, schedule and optimiser: ./_base_/peft_cascade-mask-rcnn_vit-b_3x-ms_coco.py
_base_ = ['./_base_/peft_cascade-mask-rcnn_vit-b_3x-ms_coco.py']

model = dict(backbone=dict(method=dict(type='FrozenBackbone')))
