# HST ablation, paper Table 6 (number of Meta-Register tokens), row N = 64, VTAB-1k (paper: 75.9% mean).
# #Param: not in the table; ours 1,352,748 = the full row's 772,140 + 63 more tokens x 768 x 12 layers.
# VTAB-1k representative row: CIFAR-100 (the released model's task); all 19 tasks: ./README.md (sweep).
_base_ = ['../vtab1k/vit-b_hst_vtab1k-cifar100.py']

model = dict(backbone=dict(num_meta_tokens=64))
