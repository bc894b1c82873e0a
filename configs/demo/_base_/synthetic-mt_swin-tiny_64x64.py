# The demo's shared part: a tiny Swin (same classes as the full configs, 2.3M parameters), the
# synthetic PASCAL_MT copy the dataset writes on first use (data/synthetic_pascal_mt, 64x64), four
# All-MLP decoders, a short CPU schedule. The Swin (embed_dims 32, depths 2-2-2-2, window 4) is
# spelled out in each method's config. `pretrained` is the checkpoint the demo pretrains itself
# (tools/demo/run_demo.py; configs/demo/pretrain_swin-tiny_synthetic-semseg-64x64.py).
_base_ = ['../../_base_/default_runtime_mt.py']

tasks = ['semseg', 'parts', 'sal', 'normals']
data_root = 'data/synthetic_pascal_mt'
generate = dict(num_train=96, num_val=24, size=(64, 64), seed=0)
crop_size = (64, 64)
pretrained = 'work_dirs/demo/pretrain/pretrained_swin-tiny.pth'

model = dict(
    type='MultiTaskDenseModel',
    data_preprocessor=dict(type='MultiTaskDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    tasks=tasks,
    loss_weights='uniform',
    decode_head=dict(type='AllMLPHead', in_channels=[32, 64, 128, 256], channels=64))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='MultiTaskRandomFlip', prob=0.5),
    dict(type='MultiTaskResize', scale=crop_size),
    dict(type='PackMultiTaskInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiTaskResize', scale=crop_size),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='PackMultiTaskInputs'),
]
dataset = dict(type='PascalContextMultiTaskDataset', data_root=data_root, tasks=tasks, generate=generate)
train_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False,
                        sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dict(dataset, split='train', pipeline=train_pipeline))
val_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(dataset, split='val', pipeline=test_pipeline, test_mode=True))
test_dataloader = val_dataloader
# the paper's Swin-T single-task numbers mean nothing on synthetic data: run_demo.py reports delta_m
# against multi-task full fine-tuning measured in the same run instead
val_evaluator = dict(type='MultiTaskDenseMetric', tasks=tasks)
test_evaluator = val_evaluator

iters = 400
# constructor: optimizer of the trainable parameters only (see configs/_base_/schedules/polyhistor_60e.py)
optim_wrapper = dict(type='OptimWrapper', constructor='TrainableOnlyOptimWrapperConstructor',
                     optimizer=dict(type='Adam', lr=1e-3, weight_decay=1e-4))
param_scheduler = [dict(type='LinearLR', start_factor=1.0, end_factor=0.01, begin=0, end=iters, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
