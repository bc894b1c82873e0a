# Polyhistor Table 7 (PVT-Small, frozen), PASCAL-Context 4 tasks: "Hyperformer", 14.03M / 16.14M, +0.14%
# (Encoder / All trainable, delta_m). The Swin-T row's method (layer-wise hyper-networks generating the
# full adapter weights, k = 64) as a PEFT method on PVT-Small, with rho = 32 (the Swin-T row has Table 1's
# rho = 8, which would give 49M here; Table 7's count is rho = 32, as Table 8's).
# Weights: pretrain/pvt_small.pth (official PVT-Small, ImageNet-1k), converted by mmdet, checked: _base_/pvt-small.py
_base_ = ['../../hyperformer/hyperformer_swin-t_pascal-context-mt-512x512.py', './_base_/pvt-small.py']

tasks = ['semseg', 'parts', 'sal', 'normals']
model = dict(backbone=dict(_delete_=True, type='PEFTBackbone',
                           method=dict(type='Hyperformer', tasks=tasks, reduction_ratio=32, embed_dims_task=64),
                           backbone={{_base_.pvt_small}}),
             decode_head=dict(in_channels={{_base_.pvt_small_widths}}))
val_evaluator = dict(single_task_baselines={{_base_.pvt_small_single_task_baselines}})
test_evaluator = val_evaluator
custom_hooks = [dict(type='TrainableParamsHook',
                     expect_trainable=[r'backbone\.task_embeds', r'backbone\.adapters\.', r'decode_heads\.'],
                     expect_frozen={{_base_.pvt_small_frozen}})]
