# Polyhistor baseline (sec. 5.2), Swin-T (ImageNet-1k) frozen, PASCAL-Context 4 tasks, 512x512.
# Compacter: PHM adapters with rank-one fast matrices after attention and MLP (n=4, rho=2).
# Paper (Table 1 / 6), Encoder / All trainable, delta_m: 0.23M / 2.78M, -4.55% (rho=1: 0.28M, rho=8: 0.19M)
# Single-task methods get task-wise modules, one set per task: the backbone is called as
# backbone(x, tasks=[...]) by the multi-task model. Training as every row: batch 12, 60 epochs, Adam 1e-4.
#   python tools/train.py configs/baselines/compacter_swin-t_pascal-context-mt-512x512.py
_base_ = [
    '../_base_/models/mt-dense_swin-t_peft.py', '../_base_/datasets/pascal_context_mt.py',
    '../_base_/schedules/polyhistor_60e.py', '../_base_/default_runtime_mt.py'
]

tasks = ['semseg', 'parts', 'sal', 'normals']
model = dict(backbone=dict(method=dict(type='Compacter', phm_dim=4, reduction_ratio=2, tasks=tasks)))

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\..*\.(adapter_(attn|mlp)|phm_rule)\.', r'decode_heads\.'],
         expect_frozen=[r'backbone\.stages\.\d+\.blocks\.\d+\.attn\.w_msa\.(qkv|proj)\.weight$']),
]
