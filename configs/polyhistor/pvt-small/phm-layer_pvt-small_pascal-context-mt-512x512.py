# Polyhistor Table 7 (PVT-Small, frozen), PASCAL-Context 4 tasks: "PHM layer", 0.42M / 2.53M, -3.20%
# (Encoder / All trainable, delta_m). The Swin-T row as is (n = 4, rho = 16, after attention and MLP):
# 12% above the paper, as the Swin-T row is 10% above Table 1 (see README.md in this folder).
# Weights: pretrain/pvt_small.pth (official PVT-Small, ImageNet-1k), converted by mmdet, checked: _base_/pvt-small.py
_base_ = ['../../baselines/phm-layer_swin-t_pascal-context-mt-512x512.py', './_base_/pvt-small.py']

model = dict(backbone=dict(backbone={{_base_.pvt_small_replacing}}),
             decode_head=dict(in_channels={{_base_.pvt_small_widths}}))
val_evaluator = dict(single_task_baselines={{_base_.pvt_small_single_task_baselines}})
test_evaluator = val_evaluator
custom_hooks = [dict(type='TrainableParamsHook',
                     expect_trainable=[r'backbone\..*\.(adapter_(attn|mlp)|phm_rule)\.', r'decode_heads\.'],
                     expect_frozen={{_base_.pvt_small_frozen}})]
