# HST ablation, paper Table 8 (key components), row "ViT-B w/. HSN" (no LN-Tuning, no Weight-Sharing, no
# GlobalT, no FG Injection; the Meta-Register kept), Mask R-CNN 1x COCO (paper: 30.0 AP^b / 29.2 AP^m).
# #Param: the table's 1.07M is the VTAB-1k model's; ours 31,765,104 = the full row's 30,522,352 (paper
# Table 4: 30.6M) + 8 more bridge linears (1,279,616) - the ViT blocks' LayerNorms (36,864).
_base_ = ['../mask-rcnn_vit-b_hst_1x_coco.py']

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
