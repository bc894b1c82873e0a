# Polyhistor baseline (sec. 5.2), Swin-T (ImageNet-1k) frozen, PASCAL-Context 4 tasks, 512x512.
# PHM layer: hypercomplex (Kronecker) adapters after attention and MLP, slow matrices shared by all
# layers. n=4, rho=16 gives 0.65M: no (n, rho) with n dividing every width gives the paper's 0.59M
# (see mmpeft/peft/phm.py).
# Paper (Table 1), Encoder / All trainable, delta_m: 0.59M / 3.14M, -4.34%
# Single-task methods get task-wise modules, one set per task: the backbone is called as
# backbone(x, tasks=[...]) by the multi-task model. Training as every row: batch 12, 60 epochs, Adam 1e-4.
#   python tools/train.py configs/baselines/phm-layer_swin-t_pascal-context-mt-512x512.py
_base_ = [
    '../_base_/models/mt-dense_swin-t_peft.py', '../_base_/datasets/pascal_context_mt.py',
    '../_base_/schedules/polyhistor_60e.py', '../_base_/default_runtime_mt.py'
]

tasks = ['semseg', 'parts', 'sal', 'normals']
model = dict(backbone=dict(method=dict(type='PHMLayer', phm_dim=4, reduction_ratio=16, tasks=tasks)))

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\..*\.(adapter_(attn|mlp)|phm_rule)\.', r'decode_heads\.'],
         expect_frozen=[r'backbone\.stages\.\d+\.blocks\.\d+\.attn\.w_msa\.(qkv|proj)\.weight$']),
]
