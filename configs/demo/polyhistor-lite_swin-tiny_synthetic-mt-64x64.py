# Built-in default main job (tools/run_demo.sh): Polyhistor-Lite adapts a frozen tiny Swin, pretrained
# by the demo itself, to four dense tasks of the synthetic PASCAL_MT copy at once. Same method settings
# as configs/polyhistor/polyhistor-lite_swin-t_*: rho = 2, r = n/4, k = 64, per-projection templates.
_base_ = ['./_base_/synthetic-mt_swin-tiny_64x64.py']

model = dict(backbone=dict(
    type='PolyhistorSwin', mode='polyhistor_lite', tasks={{_base_.tasks}},
    reduction_ratio=2, rank='n/4', embed_dims_task=64, factorization='per_projection',
    embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=4, mlp_ratio=4,
    out_indices=(0, 1, 2, 3), drop_path_rate=0.0,
    init_cfg=dict(type='Pretrained', checkpoint={{_base_.pretrained}})))
custom_hooks = [
    dict(type='TrainableParamsHook', expect_frozen=[r'backbone\.stages\.\d+\.blocks\.\d+\.(attn|ffn)\.',
                                                    r'backbone\.patch_embed\.projection']),
    dict(type='DeltaCheckpointHook'),
]
