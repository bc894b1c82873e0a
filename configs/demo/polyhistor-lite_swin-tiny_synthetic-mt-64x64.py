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
# The backbone's trainable part (hyper-networks, task embeddings, scaling kernels, adapter biases and
# LayerNorms, the Swin's norms) learns at 5x the decoders' rate: the adapters' output scale gamma starts
# at 0 (the model starts as the frozen backbone), and a demo's few hundred iterations at 1e-3 leave them
# barely open (600 iterations: delta_m -6.1% at 1e-3 vs -1.8% at 5e-3, decoders only -10.0%; the
# demo's 400: -2.6% at 5e-3, decoders only -10.9%; tools/demo/run_demo.py, one thread per run).
# The paper trains 60 epochs at one rate (1e-4) for every method.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=5.0)}))
custom_hooks = [
    dict(type='TrainableParamsHook', expect_frozen=[r'backbone\.stages\.\d+\.blocks\.\d+\.(attn|ffn)\.',
                                                    r'backbone\.patch_embed\.projection']),
    dict(type='DeltaCheckpointHook'),
]
