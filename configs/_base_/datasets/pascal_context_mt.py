# PASCAL-Context multi-task benchmark (Polyhistor Sec. 5.1; augmentations of appendix G): semseg (21),
# human parts (7), saliency, surface normals. data_root holds the standard PASCAL_MT release (layout:
# mmpeft/datasets/pascal_context_mt.py); for a quick run generate a synthetic copy with
# mmpeft.datasets.generate_synthetic_pascal_mt(root). Batch 12 (appendix G); one process or 12 in all.
dataset_type = 'PascalContextMultiTaskDataset'
data_root = 'data/PASCAL_MT'
tasks = ['semseg', 'parts', 'sal', 'normals']
crop_size = (512, 512)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='MultiTaskRandomFlip', prob=0.5),
    dict(type='MultiTaskRandomScale', scale_range=(0.75, 1.25)),
    dict(type='MultiTaskRandomRotate', degree=20),
    dict(type='MultiTaskResize', scale=crop_size),
    dict(type='PackMultiTaskInputs'),
]
# annotations are loaded after the resize: ground truth stays at the original size, where the model
# returns its predictions
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiTaskResize', scale=crop_size),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='PackMultiTaskInputs'),
]
train_dataloader = dict(
    batch_size=12, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', tasks=tasks, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='val', tasks=tasks, pipeline=test_pipeline,
                 test_mode=True))
test_dataloader = val_dataloader
# delta_m against the Swin-T single-task full fine-tuning results of the paper (the metric's default);
# the Swin-B configs set their own baselines
val_evaluator = dict(type='MultiTaskDenseMetric', tasks=tasks)
test_evaluator = val_evaluator
