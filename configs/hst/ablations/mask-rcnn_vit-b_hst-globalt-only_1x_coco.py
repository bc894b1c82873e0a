# HST ablation, paper Table 7 (effect of the Meta-Register), row "only GlobalT", Mask R-CNN 1x COCO (paper:
# 38.7 AP^b / 36.5 AP^m): no Meta-Register tokens, so the Meta-Global branch is GlobalT alone (and the
# per-layer LayerNorm on the projected register token goes too). #Param: not in the table; ours
# 30,508,144 = the full row's 30,522,352 - 12 x 768 (tokens) - 12 x 2 x d_j (register LayerNorms, 4,992).
_base_ = ['../mask-rcnn_vit-b_hst_1x_coco.py']

model = dict(backbone=dict(num_meta_tokens=0))
# no Meta-Register: the trainable-set check no longer expects backbone.meta_tokens
custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\.side_network\.', r'backbone\.bridge\.'],
         expect_frozen=[r'backbone\.vit\.(cls_token|pos_embed|patch_embed|norm\.)',
                        r'backbone\.vit\.blocks\.\d+\.(attn|mlp)\.']),
]
