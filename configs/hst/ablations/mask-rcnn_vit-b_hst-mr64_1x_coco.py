# HST ablation, paper Table 6 (number of Meta-Register tokens), row N = 64, Mask R-CNN 1x COCO (paper:
# 40.5 AP^b / 38.2 AP^m). #Param: not in the table; ours 31,102,960 = the full row's 30,522,352 (paper
# Table 4: 30.6M) + 63 more tokens x 768 x 12 layers.
_base_ = ['../mask-rcnn_vit-b_hst_1x_coco.py']

model = dict(backbone=dict(num_meta_tokens=64))
