# HST ablation, paper Table 7 (effect of the Meta-Register), row "only GlobalT", VTAB-1k (paper: 75.3% mean):
# no Meta-Register tokens, so the Meta-Global branch is GlobalT alone (and the per-layer LayerNorm on the
# projected register token goes too). #Param: not in the table; ours 761,628 = the full row's 772,140
# - 12 x 768 (tokens) - 12 x 2 x d_j (register LayerNorms, 1,296).
# VTAB-1k representative row: CIFAR-100 (the released model's task); all 19 tasks: ./README.md (sweep).
_base_ = ['../vtab1k/vit-b_hst_vtab1k-cifar100.py']

model = dict(backbone=dict(num_meta_tokens=0))
# no Meta-Register: the trainable-set check no longer expects backbone.meta_tokens
custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\.side_network\.', r'backbone\.bridge\.'],
         expect_frozen=[r'backbone\.vit\.(cls_token|pos_embed|patch_embed|norm\.)',
                        r'backbone\.vit\.blocks\.\d+\.(attn|mlp)\.']),
]
