# HST ablation, paper Table 8 (key components), row "HST.c" (LN-Tuning, Weight-Sharing, GlobalT; no FG
# Injection), VTAB-1k (paper: 75.2% mean).
# #Param: paper 0.78M; ours 772,140, the full row's (the FG branch has no parameters).
# VTAB-1k representative row: CIFAR-100 (the released model's task); all 19 tasks: ./README.md (sweep).
_base_ = ['../vtab1k/vit-b_hst_vtab1k-cifar100.py']

# no Fine-Grained injection: the Side blocks see the ViT through [Meta-Register, GlobalT] only
model = dict(backbone=dict(use_fine_grained=False))
