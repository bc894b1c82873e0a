# HST paper comparison row "Linear probing" (Table 4, ViT-B, ATSS 3x+MS, COCO): #Param 15.6M trainable, 26.0 AP^b.
# Linear probing: the ViT frozen; only [29]'s pyramid modules and the decoders train.
# Model, data, schedule and optimiser: ./_base_/peft_atss_vit-b_3x-ms_coco.py
_base_ = ['./_base_/peft_atss_vit-b_3x-ms_coco.py']

model = dict(backbone=dict(method=dict(type='FrozenBackbone')))
