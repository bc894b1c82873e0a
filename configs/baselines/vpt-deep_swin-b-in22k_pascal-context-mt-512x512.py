# Polyhistor Table 4, Swin-B (ImageNet-22k) frozen, PASCAL-Context 4 tasks, 512x512: "VPT-deep".
# Paper (Table 4), Encoder / All trainable, delta_m: 2.41M / 5.45M, -5.90%
# delta_m against Table 4's single-task row (semseg 70.72, parts 67.47, sal 61.00, normals 18.73).
# The Swin-T row with Swin-B (ImageNet-22k) from ../_base_/models/swin-b-in22k.py.
# Same settings as the Swin-T row (50 tokens per block, per task): ours 2.41M / 5.44M.
#   python tools/train.py configs/baselines/vpt-deep_swin-b-in22k_pascal-context-mt-512x512.py
_base_ = ['./vpt-deep_swin-t_pascal-context-mt-512x512.py', '../_base_/models/swin-b-in22k.py']

model = dict(backbone=dict(backbone={{_base_.swin_b}}), decode_head=dict(in_channels={{_base_.swin_b_widths}}))
val_evaluator = dict(single_task_baselines={{_base_.swin_b_single_task_baselines}})
test_evaluator = val_evaluator
