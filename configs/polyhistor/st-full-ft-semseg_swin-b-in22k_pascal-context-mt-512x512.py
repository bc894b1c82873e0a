# Polyhistor Table 4 "Single-task Full Fine-tuning", task semseg: a Swin-B (ImageNet-22k) fully trained with
# one All-MLP decoder on this task alone. The table counts the four single-task models together:
# 346.96M / 350.01M (ours 4 x 86.75M encoders, 350.03M with the decoders), delta_m 0.00% by
# definition: its results are the single_task_baselines of every Table 4 row
# (semseg 70.72, parts 67.47, sal 61.00, normals 18.73).
# The Swin-T config with Swin-B (ImageNet-22k) from ../_base_/models/swin-b-in22k.py.
_base_ = ['./st-full-ft-semseg_swin-t_pascal-context-mt-512x512.py', '../_base_/models/swin-b-in22k.py']

model = dict(backbone=dict(backbone={{_base_.swin_b}}), decode_head=dict(in_channels={{_base_.swin_b_widths}}))
val_evaluator = dict(single_task_baselines={{_base_.swin_b_single_task_baselines}})
test_evaluator = val_evaluator
