# The demo's own "ImageNet pretraining": no weights can be downloaded, so the tiny Swin is first trained
# from scratch on semantic segmentation of *other* synthetic images (seed 1, its own folder), then frozen
# and adapted by the other demo configs. tools/demo/run_demo.py caches the result.
_base_ = ['./mt-full-ft_swin-tiny_synthetic-mt-64x64.py']

pretrain_root = 'data/synthetic_pascal_mt_pretrain'
generate = dict(num_train=256, num_val=16, size=(64, 64), seed=1)
model = dict(tasks=['semseg'], backbone=dict(backbone=dict(init_cfg=None)))
train_dataloader = dict(dataset=dict(data_root=pretrain_root, tasks=['semseg'], generate=generate))
val_dataloader = dict(dataset=dict(data_root=pretrain_root, tasks=['semseg'], generate=generate))
test_dataloader = val_dataloader
val_evaluator = dict(type='MultiTaskDenseMetric', tasks=['semseg'])
test_evaluator = val_evaluator
iters = 1000
param_scheduler = [dict(type='LinearLR', start_factor=1.0, end_factor=0.01, begin=0, end=iters, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=iters, max_keep_ckpts=1))
