# PVT-Small (v1, Wang et al., 2021), the backbone of Polyhistor Table 7 (appendix D; PASCAL-Context, 4 tasks).
# Not a model of its own: the pieces that turn a Swin-T row (configs/baselines/*_swin-t_*,
# configs/polyhistor/*_swin-t_*, configs/hyperformer/*_swin-t_*) into its PVT-Small row. Two bases may not
# define the same key, so they go under pvt_small* names; a row lists this file beside its Swin-T config:
#   _base_ = ['../../baselines/bitfit_swin-t_pascal-context-mt-512x512.py', './_base_/pvt-small.py']
#   model = dict(backbone=dict(backbone={{_base_.pvt_small_replacing}}),
#                decode_head=dict(in_channels={{_base_.pvt_small_widths}}))
#   val_evaluator = dict(single_task_baselines={{_base_.pvt_small_single_task_baselines}})
#   test_evaluator = val_evaluator
# mmdet's PyramidVisionTransformer: stage widths 64 x num_heads = 64 / 128 / 320 / 512, blocks (3, 4, 6, 3),
# spatial reduction (8, 4, 2, 1), MLP ratios (8, 8, 4, 4). Drop path 0 as the Swin-T rows.
# Weights: the official ImageNet-1k checkpoint pretrain/pvt_small.pth (whai362/PVT, keys block1.0.attn.q ...),
# put there by the user; convert_weights=True runs mmdet's pvt_convert (q and kv linears packed into
# nn.MultiheadAttention's in_proj_weight) and PEFTBackbone checks that every backbone weight was loaded.
pvt_small = dict(
    type='mmdet.PyramidVisionTransformer', embed_dims=64, num_layers=(3, 4, 6, 3), num_heads=(1, 2, 5, 8),
    patch_sizes=(4, 2, 2, 2), strides=(4, 2, 2, 2), sr_ratios=(8, 4, 2, 1), mlp_ratios=(8, 8, 4, 4),
    out_indices=(0, 1, 2, 3), drop_path_rate=0.0, convert_weights=True,
    init_cfg=dict(type='Pretrained', checkpoint='pretrain/pvt_small.pth'))
# the same, replacing the Swin-T row's PretrainedSwin arguments where it is merged into them
pvt_small_replacing = dict(_delete_=True, **pvt_small)
pvt_small_widths = [64, 128, 320, 512]  # stage output widths: the decoders' inputs
# delta_m reference: Table 7's Single-task Full Fine-tuning row (PVT-Small)
pvt_small_single_task_baselines = dict(semseg=68.81, parts=61.27, sal=62.67, normals=17.55)
# TrainableParamsHook: the frozen attention and MixFFN weights of every PVT block (the Swin-T rows name Swin's)
pvt_small_frozen = [r'backbone\.layers\.\d\.1\.\d+\.attn\.attn\.(in_proj_weight|out_proj\.weight)$',
                    r'backbone\.layers\.\d\.1\.\d+\.ffn\.layers\.\d\.weight$']
