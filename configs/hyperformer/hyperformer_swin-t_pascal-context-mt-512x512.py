# Hyperformer (layer-wise hyper-networks generating full adapter weights, Polyhistor eq. 2) on a frozen
# Swin-T (ImageNet-1k), PASCAL-Context 4 tasks. Paper Tables 1 / 6: rho = 8 gives 72.77M / 75.32M
# trainable, +2.64% delta_m (rho = 16: 37.69M, rho = 32: 20.15M). Task embeddings k = 64.
_base_ = [
    '../_base_/models/mt-dense_swin-t_polyhistor.py', '../_base_/datasets/pascal_context_mt.py',
    '../_base_/schedules/polyhistor_60e.py', '../_base_/default_runtime_mt.py'
]

model = dict(backbone=dict(mode='hyperformer', reduction_ratio=8, embed_dims_task=64))

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\.task_embeds', r'backbone\.adapters\.', r'decode_heads\.'],
         expect_frozen=[r'backbone\.stages\.\d+\.blocks\.\d+\.(attn|ffn)\.', r'backbone\.patch_embed\.projection']),
]
