# Polyhistor baseline (sec. 5.2), Swin-T (ImageNet-1k) frozen, PASCAL-Context 4 tasks, 512x512.
# Shared Adapter: one adapter per block shared by all tasks (task-wise input norms), rho=2.
# Table 6: --cfg-options model.backbone.method.reduction_ratio=1|4|8 (4.35 / 1.12 / 0.58M).
# Paper (Table 1 / 6), Encoder / All trainable, delta_m: 2.20M / 4.74M, -1.83%
# Single-task methods get task-wise modules, one set per task: the backbone is called as
# backbone(x, tasks=[...]) by the multi-task model. Training as every row: batch 12, 60 epochs, Adam 1e-4.
#   python tools/train.py configs/baselines/shared-adapter_swin-t_pascal-context-mt-512x512.py
_base_ = [
    '../_base_/models/mt-dense_swin-t_peft.py', '../_base_/datasets/pascal_context_mt.py',
    '../_base_/schedules/polyhistor_60e.py', '../_base_/default_runtime_mt.py'
]

tasks = ['semseg', 'parts', 'sal', 'normals']
model = dict(backbone=dict(method=dict(type='SharedAdapter', reduction_ratio=2, tasks=tasks)))

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\..*\.adapter_mlp\.', r'decode_heads\.'],
         expect_frozen=[r'backbone\.stages\.\d+\.blocks\.\d+\.attn\.w_msa\.(qkv|proj)\.weight$']),
]
