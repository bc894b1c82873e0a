# Baseline "Fine-tuning Decoders" (Polyhistor Table 1: 0.00M / 2.55M trainable, -11.02% delta_m): the
# Swin-T (ImageNet-1k) is frozen; only the four All-MLP decoders train.
_base_ = [
    '../_base_/models/mt-dense_swin-t_peft.py', '../_base_/datasets/pascal_context_mt.py',
    '../_base_/schedules/polyhistor_60e.py', '../_base_/default_runtime_mt.py'
]

model = dict(backbone=dict(method=dict(type='FrozenBackbone')))
custom_hooks = [dict(type='TrainableParamsHook', expect_trainable=[r'decode_heads\.'], expect_frozen=[r'backbone\.'])]
