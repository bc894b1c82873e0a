# Polyhistor-Lite (one hyper-network pair shared by layers and tasks + Layer-wise Scaling Kernels, eqs. 4-6)
# on a frozen Swin-T (ImageNet-1k), PASCAL-Context 4 tasks. Paper Table 1: 0.41M / 2.96M trainable,
# +1.74% delta_m. Appendix G: rho = 2 (on the stage-1 width 96: n = 48), r = n/4 = 12, k = 64
# (task and layer embeddings of 32 each); scales s = (1, 2, 4, 8) from the stage widths.
# Table 2 varies k: set embed_dims_task=16 / 32.
_base_ = [
    '../_base_/models/mt-dense_swin-t_polyhistor.py', '../_base_/datasets/pascal_context_mt.py',
    '../_base_/schedules/polyhistor_60e.py', '../_base_/default_runtime_mt.py'
]

model = dict(backbone=dict(mode='polyhistor_lite', reduction_ratio=2, rank='n/4', embed_dims_task=64,
                           factorization='per_projection'))

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\.task_embeds', r'backbone\.template_hypernet\.',
                           r'backbone\.adapters\..*\.scaling_kernels', r'decode_heads\.'],
         expect_frozen=[r'backbone\.stages\.\d+\.blocks\.\d+\.(attn|ffn)\.', r'backbone\.patch_embed\.projection']),
]
