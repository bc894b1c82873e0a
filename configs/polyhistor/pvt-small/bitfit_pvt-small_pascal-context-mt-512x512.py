# Polyhistor Table 7 (PVT-Small, frozen), PASCAL-Context 4 tasks: "BitFit", 0.22M / 2.34M, -2.38%
# (Encoder / All trainable, delta_m). The Swin-T row (every bias, one delta set per task) with PVT-Small,
# whose biases include nn.MultiheadAttention's in_proj_bias (the official q / kv biases): 0.22M with them,
# 0.17M without. PVT has no relative position bias tables.
# Weights: pretrain/pvt_small.pth (official PVT-Small, ImageNet-1k), converted by mmdet, checked: _base_/pvt-small.py
_base_ = ['../../baselines/bitfit_swin-t_pascal-context-mt-512x512.py', './_base_/pvt-small.py']

model = dict(backbone=dict(method=dict(relative_position_bias=False), backbone={{_base_.pvt_small_replacing}}),
             decode_head=dict(in_channels={{_base_.pvt_small_widths}}))
val_evaluator = dict(single_task_baselines={{_base_.pvt_small_single_task_baselines}})
test_evaluator = val_evaluator
custom_hooks = [dict(type='TrainableParamsHook', expect_trainable=[r'backbone\..*\.task_bias\.', r'decode_heads\.'],
                     expect_frozen={{_base_.pvt_small_frozen}})]
