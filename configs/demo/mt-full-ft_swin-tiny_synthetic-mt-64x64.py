# Demo comparison row: multi-task full fine-tuning of the same pretrained tiny Swin (everything trains).
_base_ = ['./decoders-only_swin-tiny_synthetic-mt-64x64.py']

model = dict(backbone=dict(method=dict(type='FullFinetune')))
custom_hooks = [dict(type='TrainableParamsHook')]
