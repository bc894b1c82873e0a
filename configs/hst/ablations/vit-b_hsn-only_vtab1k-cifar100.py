# HST ablation, paper Table 8 (key components), row "ViT-B w/. HSN" (no LN-Tuning, no Weight-Sharing, no
# GlobalT, no FG Injection; the Meta-Register kept), VTAB-1k (paper: 72.1% mean).
# #Param: paper 1.07M; ours 1,067,484 = the full row's 772,140 + 8 more bridge linears (332,208)
# - the ViT blocks' LayerNorms (36,864).
# VTAB-1k representative row: CIFAR-100 (the released model's task); all 19 tasks: ./README.md (sweep).
_base_ = ['../vtab1k/vit-b_hst_vtab1k-cifar100.py']

# frozen ViT LayerNorms; one bridge linear per ViT layer (12, not one per stage); Meta-Global branch =
# the Meta-Register token alone
model = dict(backbone=dict(tune_vit_norms=False, share_bridge=False, use_global_token=False,
                           use_fine_grained=False))
# no LN tuning: the trainable-set check also expects the ViT blocks' norm1 / norm2 frozen
custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\.side_network\.', r'backbone\.bridge\.', r'backbone\.meta_tokens'],
         expect_frozen=[r'backbone\.vit\.(cls_token|pos_embed|patch_embed|norm\.)',
                        r'backbone\.vit\.blocks\.\d+\.(attn|mlp|norm1|norm2)\.']),
]
