# HST ablation, paper Table 8 (key components), row "HST.c" (LN-Tuning, Weight-Sharing, GlobalT; no FG
# Injection), Mask R-CNN 1x COCO (paper: 34.8 AP^b / 33.6 AP^m).
# #Param: the table's 0.78M is the VTAB-1k model's; ours 30,522,352, the full row's (paper Table 4: 30.6M;
# the FG branch has no parameters).
_base_ = ['../mask-rcnn_vit-b_hst_1x_coco.py']

# no Fine-Grained injection: the Side blocks see the ViT through [Meta-Register, GlobalT] only
model = dict(backbone=dict(use_fine_grained=False))
