# Polyhistor on a frozen Swin-B pretrained on ImageNet-1k (Polyhistor Table 3 / Fig. 4), PASCAL-Context
# 4 tasks. Official checkpoint pretrain/swin_base_patch4_window7_224.pth (put there by the user). delta_m is taken
# against the Swin-B single-task full fine-tuning results of Table 3.
_base_ = ['./polyhistor_swin-t_pascal-context-mt-512x512.py']

model = dict(
    backbone=dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7,
                  init_cfg=dict(type='Pretrained', checkpoint='pretrain/swin_base_patch4_window7_224.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]))
single_task_baselines = dict(semseg=67.88, parts=64.47, sal=61.26, normals=18.85)
val_evaluator = dict(single_task_baselines=single_task_baselines)
test_evaluator = val_evaluator
# Polyhistor hyper-parameters of appendix G (rho = 16, r = n/4, k = 64).
