# Polyhistor baseline (sec. 5.2), Swin-T (ImageNet-1k) frozen, PASCAL-Context 4 tasks, 512x512.
# Compacter++: Compacter adapters after the MLP only (n=4, rho=2).
# Paper (Table 1 / 6), Encoder / All trainable, delta_m: 0.11M / 2.66M, -5.84% (rho=1: 0.14M, rho=8: 0.09M)
# Single-task methods get task-wise modules, one set per task: the backbone is called as
# backbone(x, tasks=[...]) by the multi-task model. Training as every row: batch 12, 60 epochs, Adam 1e-4.
#   python tools/train.py configs/baselines/compacter-pp_swin-t_pascal-context-mt-512x512.py
_base_ = [
    '../_base_/models/mt-dense_swin-t_peft.py', '../_base_/datasets/pascal_context_mt.py',
    '../_base_/schedules/polyhistor_60e.py', '../_base_/default_runtime_mt.py'
]

tasks = ['semseg', 'parts', 'sal', 'normals']
model = dict(backbone=dict(method=dict(type='CompacterPlusPlus', phm_dim=4, reduction_ratio=2, tasks=tasks)))

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\..*\.(adapter_mlp|phm_rule)\.', r'decode_heads\.'],
         expect_frozen=[r'backbone\.stages\.\d+\.blocks\.\d+\.attn\.w_msa\.(qkv|proj)\.weight$']),
]
