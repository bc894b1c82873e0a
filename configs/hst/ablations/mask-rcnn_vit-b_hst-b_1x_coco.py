# HST ablation, paper Table 8 (key components), row "HST.b" (LN-Tuning, Weight-Sharing; no GlobalT, no FG
# Injection; the Meta-Register kept), Mask R-CNN 1x COCO (paper: 32.8 AP^b / 31.5 AP^m).
# #Param: the table's 0.78M is the VTAB-1k model's; ours 30,522,352, the full row's (paper Table 4: 30.6M;
# GlobalT and the FG branch have no parameters).
_base_ = ['../mask-rcnn_vit-b_hst_1x_coco.py']

# Meta-Global branch = the Meta-Register token alone; no Fine-Grained injection
model = dict(backbone=dict(use_global_token=False, use_fine_grained=False))
