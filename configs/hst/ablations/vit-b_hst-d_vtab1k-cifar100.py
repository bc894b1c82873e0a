# HST ablation, paper Table 8 (key components), row "HST.d" (LN-Tuning, Weight-Sharing, FG Injection; no
# GlobalT), VTAB-1k (paper: 75.7% mean). The same model is Table 7's row "only Meta-Register" (75.7%).
# #Param: paper 0.78M; ours 772,140, the full row's (GlobalT has no parameters).
# VTAB-1k representative row: CIFAR-100 (the released model's task); all 19 tasks: ./README.md (sweep).
_base_ = ['../vtab1k/vit-b_hst_vtab1k-cifar100.py']

# Meta-Global branch = the Meta-Register token alone
model = dict(backbone=dict(use_global_token=False))
