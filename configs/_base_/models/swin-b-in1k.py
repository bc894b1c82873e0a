# Swin-B pretrained on ImageNet-1k, for the Swin-B rows of Polyhistor Table 3 (PASCAL-Context, 4 tasks).
# Not a model of its own: the pieces that turn a Swin-T row (configs/baselines/*_swin-t_*,
# configs/polyhistor/*_swin-t_*, whose Swin sits in PEFTBackbone) into its Swin-B row. Two bases may not
# define the same key, so they go under swin_b* names; a row lists this file beside its Swin-T config:
#   _base_ = ['./bitfit_swin-t_pascal-context-mt-512x512.py', '../_base_/models/swin-b-in1k.py']
#   model = dict(backbone=dict(backbone={{_base_.swin_b}}), decode_head=dict(in_channels={{_base_.swin_b_widths}}))
#   val_evaluator = dict(single_task_baselines={{_base_.swin_b_single_task_baselines}})
#   test_evaluator = val_evaluator
# Weights: the official checkpoint pretrain/swin_base_patch4_window7_224.pth, put there by the user.
swin_b = dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7,
              init_cfg=dict(type='Pretrained', checkpoint='pretrain/swin_base_patch4_window7_224.pth'))
swin_b_widths = [128, 256, 512, 1024]  # stage output widths C, 2C, 4C, 8C: the decoders' inputs
# delta_m reference: Table 3's Single-task Full Fine-tuning row (Swin-B, ImageNet-1k)
swin_b_single_task_baselines = dict(semseg=67.88, parts=64.47, sal=61.26, normals=18.85)
