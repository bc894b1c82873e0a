# Polyhistor Table 7 (PVT-Small), "Single-task Full Fine-tuning", task semseg: a PVT-Small fully trained with one
# All-MLP decoder on this task alone. The table counts the four single-task models together: 95.88M / 97.99M,
# delta_m 0.00% by definition: its results are the single_task_baselines of every Table 7 row
# (semseg 68.81, parts 61.27, sal 62.67, normals 17.55). Counts: README.md in this folder.
# Weights: pretrain/pvt_small.pth (official PVT-Small, ImageNet-1k), converted by mmdet, checked: _base_/pvt-small.py
_base_ = ['../st-full-ft-semseg_swin-t_pascal-context-mt-512x512.py', './_base_/pvt-small.py']

model = dict(backbone=dict(backbone={{_base_.pvt_small_replacing}}),
             decode_head=dict(in_channels={{_base_.pvt_small_widths}}))
val_evaluator = dict(single_task_baselines={{_base_.pvt_small_single_task_baselines}})
test_evaluator = val_evaluator
