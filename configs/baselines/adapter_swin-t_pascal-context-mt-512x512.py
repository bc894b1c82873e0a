# Polyhistor baseline (sec. 5.2), Swin-T (ImageNet-1k) frozen, PASCAL-Context 4 tasks, 512x512.
# Adapter: one bottleneck adapter per block after the MLP (with an input LayerNorm), rho=2.
# Table 6's other rows: --cfg-options model.backbone.method.reduction_ratio=1|4|8|16 (17.32 / 4.37 / 2.21 / 1.13M);
# Houlsby's two per block: model.backbone.method.position=both.
# Paper (Table 1 / 6), Encoder / All trainable, delta_m: 8.69M / 11.24M, -2.71%
# Single-task methods get task-wise modules, one set per task: the backbone is called as
# backbone(x, tasks=[...]) by the multi-task model. Training as every row: batch 12, 60 epochs, Adam 1e-4.
#   python tools/train.py configs/baselines/adapter_swin-t_pascal-context-mt-512x512.py
_base_ = [
    '../_base_/models/mt-dense_swin-t_peft.py', '../_base_/datasets/pascal_context_mt.py',
    '../_base_/schedules/polyhistor_60e.py', '../_base_/default_runtime_mt.py'
]

tasks = ['semseg', 'parts', 'sal', 'normals']
model = dict(backbone=dict(method=dict(type='Adapter', reduction_ratio=2, position='mlp', tasks=tasks)))

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\..*\.adapter_mlp\.', r'decode_heads\.'],
         expect_frozen=[r'backbone\.stages\.\d+\.blocks\.\d+\.attn\.w_msa\.(qkv|proj)\.weight$']),
]
