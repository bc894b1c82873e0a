# HST ablation, paper Table 8 (key components), row "HST.a" (LN-Tuning; no Weight-Sharing, no GlobalT, no
# FG Injection; the Meta-Register kept), VTAB-1k (paper: 74.3% mean).
# #Param: paper 1.10M; ours 1,104,348 = the full row's 772,140 + 8 more bridge linears (332,208).
# VTAB-1k representative row: CIFAR-100 (the released model's task); all 19 tasks: ./README.md (sweep).
_base_ = ['../vtab1k/vit-b_hst_vtab1k-cifar100.py']

# one bridge linear per ViT layer (12, not one per stage); Meta-Global branch = the Meta-Register token alone
model = dict(backbone=dict(share_bridge=False, use_global_token=False, use_fine_grained=False))
