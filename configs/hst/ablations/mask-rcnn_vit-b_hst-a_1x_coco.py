# HST ablation, paper Table 8 (key components), row "HST.a" (LN-Tuning; no Weight-Sharing, no GlobalT, no
# FG Injection; the Meta-Register kept), Mask R-CNN 1x COCO (paper: 32.8 AP^b / 31.5 AP^m).
# #Param: the table's 1.10M is the VTAB-1k model's; ours 31,801,968 = the full row's 30,522,352 (paper
# Table 4: 30.6M) + 8 more bridge linears (1,279,616).
_base_ = ['../mask-rcnn_vit-b_hst_1x_coco.py']

# one bridge linear per ViT layer (12, not one per stage); Meta-Global branch = the Meta-Register token alone
model = dict(backbone=dict(share_bridge=False, use_global_token=False, use_fine_grained=False))
