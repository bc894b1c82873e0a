# HST paper comparison row "LoRA-32" (Table 4, ViT-B, Mask R-CNN 3x+MS, COCO):
# #Param 28.4M trainable, 39.3 AP^b / 37.1 AP^m.
# LoRA on W_q and W_v of every block, rank 16, scale 1 (mergeable), as the 1x rows: the tables add
# 0.6M over linear probing for ViT-B (rank 16 on q and v: 0.59M), though the Mask R-CNN row is labelled "LoRA-32".
# Model, data, schedule and optimiser: ./_base_/peft_mask-rcnn_vit-b_3x-ms_coco.py
_base_ = ['./_base_/peft_mask-rcnn_vit-b_3x-ms_coco.py']

model = dict(backbone=dict(method=dict(type='LoRA', rank=16, scaling=1.0, targets=('q', 'v'))))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.lora_[qv]\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
