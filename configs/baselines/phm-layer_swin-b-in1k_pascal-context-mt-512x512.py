# Polyhistor Table 3, Swin-B (ImageNet-1k) frozen, PASCAL-Context 4 tasks, 512x512: "PHM layer".
# Paper (Table 3), Encoder / All trainable, delta_m: 1.89M / 4.94M, -3.21%
# delta_m against Table 3's single-task row (semseg 67.88, parts 64.47, sal 61.26, normals 18.85).
# The Swin-T row with Swin-B (ImageNet-1k) from ../_base_/models/swin-b-in1k.py.
# Same settings as the Swin-T row (n = 4, rho = 16): ours 2.04M / 5.07M (+8%), the Swin-T
# row's miss (+10%) again: the paper's count needs rho * n ~ 70, which no n dividing every
# width gives (mmpeft/peft/phm.py).
#   python tools/train.py configs/baselines/phm-layer_swin-b-in1k_pascal-context-mt-512x512.py
_base_ = ['./phm-layer_swin-t_pascal-context-mt-512x512.py', '../_base_/models/swin-b-in1k.py']

model = dict(backbone=dict(backbone={{_base_.swin_b}}), decode_head=dict(in_channels={{_base_.swin_b_widths}}))
val_evaluator = dict(single_task_baselines={{_base_.swin_b_single_task_baselines}})
test_evaluator = val_evaluator
