# HST paper comparison row "LoRA-64" (Table 4, ViT-L, Mask R-CNN 1x, COCO):
# #Param 39.84M trainable, 45.0 AP^b / 41.2 AP^m.
# LoRA-64: LoRA on W_q and W_v of every block, rank 64, scale 1 (mergeable): 6.29M in ViT-L.
# Model, data, schedule and optimiser: ./_base_/peft_mask-rcnn_vit-l_1x_coco.py
_base_ = ['./_base_/peft_mask-rcnn_vit-l_1x_coco.py']

model = dict(backbone=dict(method=dict(type='LoRA', rank=64, scaling=1.0, targets=('q', 'v'))))

custom_hooks = [
    dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.', r'backbone\.vit\..*\.lora_[qv]\.'],
         expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$']),
]
