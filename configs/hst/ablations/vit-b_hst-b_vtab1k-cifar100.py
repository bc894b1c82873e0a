# HST ablation, paper Table 8 (key components), row "HST.b" (LN-Tuning, Weight-Sharing; no GlobalT, no FG
# Injection; the Meta-Register kept), VTAB-1k (paper: 75.0% mean).
# #Param: paper 0.78M; ours 772,140, the full row's (GlobalT and the FG branch have no parameters).
# VTAB-1k representative row: CIFAR-100 (the released model's task); all 19 tasks: ./README.md (sweep).
_base_ = ['../vtab1k/vit-b_hst_vtab1k-cifar100.py']

# Meta-Global branch = the Meta-Register token alone; no Fine-Grained injection
model = dict(backbone=dict(use_global_token=False, use_fine_grained=False))
