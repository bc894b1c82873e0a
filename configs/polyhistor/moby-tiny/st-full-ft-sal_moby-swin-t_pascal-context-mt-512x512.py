# Polyhistor Table 8 (MoBY-Tiny backbone), row "Single-task Full Fine-tuning" (task sal): a MoBY-Tiny
# Swin-T fully trained with one All-MLP decoder on this task alone. Table 8 counts the four single-task
# models together: 110.07M / 112.62M, delta_m 0.00% (the reference of the other rows: semseg 65.52,
# parts 61.78, sal 62.05, normals 18.14). This config: 27.52M / 28.15M (one task).
# Weights: MoBY's self-supervised Swin-T (ImageNet-1k, 300 epochs), put by the user in pretrain/; its query
# encoder is loaded, the rest of MoBY's training model left out (see README.md in this folder).
_base_ = ['../st-full-ft-sal_swin-t_pascal-context-mt-512x512.py']

model = dict(backbone=dict(backbone=dict(
    init_cfg=dict(checkpoint='pretrain/moby_swin_t_300ep_pretrained.pth', layout='moby'))))
single_task_baselines = dict(semseg=65.52, parts=61.78, sal=62.05, normals=18.14)
val_evaluator = dict(single_task_baselines=single_task_baselines)
test_evaluator = val_evaluator
