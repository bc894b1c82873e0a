# Polyhistor Table 7 (PVT-Small, frozen), PASCAL-Context 4 tasks, 512x512: "Fine-tuning Decoders".
# Paper, Encoder / All trainable, delta_m: 0.00M / 2.11M, -8.85%. The Swin-T row with PVT-Small.
# Weights: pretrain/pvt_small.pth (official PVT-Small, ImageNet-1k), converted by mmdet, checked: _base_/pvt-small.py
_base_ = ['../decoders-only_swin-t_pascal-context-mt-512x512.py', './_base_/pvt-small.py']

model = dict(backbone=dict(backbone={{_base_.pvt_small_replacing}}),
             decode_head=dict(in_channels={{_base_.pvt_small_widths}}))
val_evaluator = dict(single_task_baselines={{_base_.pvt_small_single_task_baselines}})
test_evaluator = val_evaluator
