# Polyhistor baseline (sec. 5.2), Swin-T (ImageNet-1k) frozen, PASCAL-Context 4 tasks, 512x512.
# BitFit (Zaken et al.): every bias of the Swin-T, with patch embedding and patch merging, and the
# relative position bias tables (the paper counted every tensor named "bias"), one delta set per task.
# Paper (Table 1), Encoder / All trainable, delta_m: 0.30M / 2.85M, -4.60%
# Single-task methods get task-wise modules, one set per task: the backbone is called as
# backbone(x, tasks=[...]) by the multi-task model. Training as every row: batch 12, 60 epochs, Adam 1e-4.
#   python tools/train.py configs/baselines/bitfit_swin-t_pascal-context-mt-512x512.py
_base_ = [
    '../_base_/models/mt-dense_swin-t_peft.py', '../_base_/datasets/pascal_context_mt.py',
    '../_base_/schedules/polyhistor_60e.py', '../_base_/default_runtime_mt.py'
]

tasks = ['semseg', 'parts', 'sal', 'normals']
model = dict(backbone=dict(method=dict(type='BitFit', relative_position_bias=True, tasks=tasks)))

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\..*\.task_(bias|table)\.', r'decode_heads\.'],
         expect_frozen=[r'backbone\.stages\.\d+\.blocks\.\d+\.attn\.w_msa\.(qkv|proj)\.weight$']),
]
