# Baseline "Multi-task Full Fine-tuning" (Polyhistor Table 1: 27.51M / 30.06M trainable, +2.23% delta_m):
# one shared Swin-T (ImageNet-1k), all of it trained, and one All-MLP decoder per task.
_base_ = [
    '../_base_/models/mt-dense_swin-t_peft.py', '../_base_/datasets/pascal_context_mt.py',
    '../_base_/schedules/polyhistor_60e.py', '../_base_/default_runtime_mt.py'
]

model = dict(backbone=dict(method=dict(type='FullFinetune')))
