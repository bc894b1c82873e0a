# Polyhistor Table 7 (PVT-Small, frozen), PASCAL-Context 4 tasks: "LoRA", 0.30M / 2.41M, -1.35%
# (Encoder / All trainable, delta_m). The Swin-T row as is: rank 4, scale 4, one branch with its LayerNorm
# per block on the fused query-key-value projection (PVT: nn.MultiheadAttention's in_proj_weight, queries
# from the tokens, keys / values from the spatially reduced ones): 4 (4 d r + 2 d) per block = 0.2995M.
# LoRA on q and v (the official q / kv linears' reading) is 0.27M without and 0.33M with the norms.
# Weights: pretrain/pvt_small.pth (official PVT-Small, ImageNet-1k), converted by mmdet, checked: _base_/pvt-small.py
_base_ = ['../../baselines/lora_swin-t_pascal-context-mt-512x512.py', './_base_/pvt-small.py']

model = dict(backbone=dict(backbone={{_base_.pvt_small_replacing}}),
             decode_head=dict(in_channels={{_base_.pvt_small_widths}}))
val_evaluator = dict(single_task_baselines={{_base_.pvt_small_single_task_baselines}})
test_evaluator = val_evaluator
custom_hooks = [dict(type='TrainableParamsHook', expect_trainable=[r'backbone\..*\.lora_qkv\.', r'decode_heads\.'],
                     expect_frozen={{_base_.pvt_small_frozen}})]
