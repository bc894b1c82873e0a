# Polyhistor Table 7 (PVT-Small, frozen), PASCAL-Context 4 tasks: "Adapter", 0.79M / 2.90M, -1.97%
# (Encoder / All trainable, delta_m). The Swin-T row (one adapter per block after the MLP, input LayerNorm)
# with rho = 16, the ratio that gives Table 7's count (and Swin-B's in Tables 3 / 4); the Swin-T row's
# rho = 2 would give 5.97M.
# Weights: pretrain/pvt_small.pth (official PVT-Small, ImageNet-1k), converted by mmdet, checked: _base_/pvt-small.py
_base_ = ['../../baselines/adapter_swin-t_pascal-context-mt-512x512.py', './_base_/pvt-small.py']

model = dict(backbone=dict(method=dict(reduction_ratio=16), backbone={{_base_.pvt_small_replacing}}),
             decode_head=dict(in_channels={{_base_.pvt_small_widths}}))
val_evaluator = dict(single_task_baselines={{_base_.pvt_small_single_task_baselines}})
test_evaluator = val_evaluator
custom_hooks = [dict(type='TrainableParamsHook', expect_trainable=[r'backbone\..*\.adapter_mlp\.', r'decode_heads\.'],
                     expect_frozen={{_base_.pvt_small_frozen}})]
