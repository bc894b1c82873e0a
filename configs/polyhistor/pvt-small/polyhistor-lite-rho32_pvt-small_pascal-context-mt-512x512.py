# Polyhistor Table 7 (PVT-Small, frozen), PASCAL-Context 4 tasks: "Polyhistor-Lite (rho = 32)" (Encoder / All
# trainable, delta_m: rho = 1 5.21M / 7.32M, +0.13%; rho = 32 0.29M / 2.40M, -0.73%). The Swin-T row's method
# (appendix G: r = n/4, k = 64, per-projection factors) as a PEFT method on PVT-Small with rho = 32: the
# Template Kernels have the stage-1 width d1 = 64 and the Scaling Kernels s = 1, 2, 5, 8 map them to the
# widths 64 / 128 / 320 / 512. See README.md in this folder for the counts (rho = 1 cannot give 5.21M).
# Weights: pretrain/pvt_small.pth (official PVT-Small, ImageNet-1k), converted by mmdet, checked: _base_/pvt-small.py
_base_ = ['../polyhistor-lite_swin-t_pascal-context-mt-512x512.py', './_base_/pvt-small.py']

tasks = ['semseg', 'parts', 'sal', 'normals']
model = dict(backbone=dict(_delete_=True, type='PEFTBackbone',
                           method=dict(type='PolyhistorLite', tasks=tasks, reduction_ratio=32, rank='n/4',
                                       embed_dims_task=64, factorization='per_projection'),
                           backbone={{_base_.pvt_small}}),
             decode_head=dict(in_channels={{_base_.pvt_small_widths}}))
val_evaluator = dict(single_task_baselines={{_base_.pvt_small_single_task_baselines}})
test_evaluator = val_evaluator
custom_hooks = [dict(type='TrainableParamsHook',
                     expect_trainable=[r'backbone\.task_embeds', r'backbone\.template_hypernet\.',
                                       r'backbone\.adapters\..*\.scaling_kernels', r'decode_heads\.'],
                     expect_frozen={{_base_.pvt_small_frozen}})]
