# HST ablation, paper Table 8 (key components), row "HST.d" (LN-Tuning, Weight-Sharing, FG Injection; no
# GlobalT), Mask R-CNN 1x COCO (paper: 39.5 AP^b / 37.3 AP^m). The same model is Table 7's row "only
# Meta-Register" (39.5 / 37.3). #Param: the table's 0.78M is the VTAB-1k model's; ours 30,522,352, the
# full row's (paper Table 4: 30.6M; GlobalT has no parameters).
_base_ = ['../mask-rcnn_vit-b_hst_1x_coco.py']

# Meta-Global branch = the Meta-Register token alone
model = dict(backbone=dict(use_global_token=False))
