# Polyhistor (decomposed hyper-networks, eq. 3) on a frozen Swin-T (ImageNet-1k), PASCAL-Context 4 tasks.
# Paper Table 1: 6.41M / 8.96M trainable (Encoder / All), +2.34% delta_m. Hyper-parameters of appendix G:
# rho = d/n = 16, r = n/4, k = 64. Training: batch 12, 60 epochs, Adam 1e-4, weight decay 1e-4, linear decay.
#   python tools/train.py configs/polyhistor/polyhistor_swin-t_pascal-context-mt-512x512.py
_base_ = [
    '../_base_/models/mt-dense_swin-t_polyhistor.py', '../_base_/datasets/pascal_context_mt.py',
    '../_base_/schedules/polyhistor_60e.py', '../_base_/default_runtime_mt.py'
]

model = dict(backbone=dict(mode='polyhistor', reduction_ratio=16, rank='n/4', embed_dims_task=64,
                           factorization='joint'))

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\.task_embeds', r'backbone\.adapters\.', r'decode_heads\.'],
         expect_frozen=[r'backbone\.stages\.\d+\.blocks\.\d+\.(attn|ffn)\.', r'backbone\.patch_embed\.projection']),
]
