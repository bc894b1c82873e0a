# Baseline "Single-task Full Fine-tuning", task normals: a Swin-T (ImageNet-1k) fully trained with one All-MLP
# decoder on this task alone. Polyhistor Table 1 counts the four single-task models together
# (110.07M / 112.62M = 4 x 27.52M encoders + 4 decoders); delta_m of the other rows is relative to them.
_base_ = ['./mt-full-ft_swin-t_pascal-context-mt-512x512.py']

tasks = ['normals']
model = dict(tasks=tasks)
train_dataloader = dict(dataset=dict(tasks=tasks))
val_dataloader = dict(dataset=dict(tasks=tasks))
test_dataloader = val_dataloader
val_evaluator = dict(tasks=tasks)
test_evaluator = val_evaluator
