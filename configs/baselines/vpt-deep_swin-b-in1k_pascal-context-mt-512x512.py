# Polyhistor Table 3, Swin-B (ImageNet-1k) frozen, PASCAL-Context 4 tasks, 512x512: "VPT-deep".
# Paper (Table 3), Encoder / All trainable, delta_m: 2.41M / 5.45M, -7.57%
# delta_m against Table 3's single-task row (semseg 67.88, parts 64.47, sal 61.26, normals 18.85).
# The Swin-T row with Swin-B (ImageNet-1k) from ../_base_/models/swin-b-in1k.py.
# Same settings as the Swin-T row (50 tokens per block, per task): ours 2.41M / 5.44M.
#   python tools/train.py configs/baselines/vpt-deep_swin-b-in1k_pascal-context-mt-512x512.py
_base_ = ['./vpt-deep_swin-t_pascal-context-mt-512x512.py', '../_base_/models/swin-b-in1k.py']

model = dict(backbone=dict(backbone={{_base_.swin_b}}), decode_head=dict(in_channels={{_base_.swin_b_widths}}))
val_evaluator = dict(single_task_baselines={{_base_.swin_b_single_task_baselines}})
test_evaluator = val_evaluator
