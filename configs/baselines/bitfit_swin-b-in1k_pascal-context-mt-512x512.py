# Polyhistor Table 3, Swin-B (ImageNet-1k) frozen, PASCAL-Context 4 tasks, 512x512: "Bitfit".
# Paper (Table 3), Encoder / All trainable, delta_m: 0.20M / 3.24M, -2.46%
# delta_m against Table 3's single-task row (semseg 67.88, parts 64.47, sal 61.26, normals 18.85).
# The Swin-T row with Swin-B (ImageNet-1k) from ../_base_/models/swin-b-in1k.py.
# Same settings as the Swin-T row (one bias set per task, as the paper's sec. 5.2 says): ours
# 0.81M / 3.84M. The paper's 0.20M is exactly ONE set of Swin-B biases (ours / 4 = 0.20M), while
# its Swin-T row (0.30M) counts four: we keep the task-wise method and do not follow the count.
#   python tools/train.py configs/baselines/bitfit_swin-b-in1k_pascal-context-mt-512x512.py
_base_ = ['./bitfit_swin-t_pascal-context-mt-512x512.py', '../_base_/models/swin-b-in1k.py']

model = dict(backbone=dict(backbone={{_base_.swin_b}}), decode_head=dict(in_channels={{_base_.swin_b_widths}}))
val_evaluator = dict(single_task_baselines={{_base_.swin_b_single_task_baselines}})
test_evaluator = val_evaluator
