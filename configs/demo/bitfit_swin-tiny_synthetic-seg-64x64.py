# Built-in default main job: BitFit on a small Swin Transformer (mmseg's) with a SegFormer All-MLP
# head, trained and evaluated on a synthetic 4-class segmentation set that the dataset generates
# deterministically on first use (data/synthetic_seg). CPU, no downloads, a few minutes.
#   python tools/train.py configs/demo/bitfit_swin-tiny_synthetic-seg-64x64.py
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

crop_size = (64, 64)
data_root = 'data/synthetic_seg'
generate = dict(num_train=96, num_val=24, size=crop_size, seed=0)

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size),
    backbone=dict(
        type='PEFTBackbone',
        method=dict(type='BitFit'),
        backbone=dict(
            type='SwinTransformer', pretrain_img_size=64, embed_dims=32, depths=(2, 2, 2, 2),
            num_heads=(1, 2, 4, 8), window_size=4, mlp_ratio=4, patch_size=4, strides=(4, 2, 2, 2),
            out_indices=(0, 1, 2, 3), drop_path_rate=0.0)),
    decode_head=dict(
        type='SegformerHead', in_channels=[32, 64, 128, 256], in_index=[0, 1, 2, 3], channels=64,
        dropout_ratio=0.0, num_classes=4, norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='SyntheticSegDataset', data_root=data_root, generate=generate,
                 data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='SyntheticSegDataset', data_root=data_root, generate=generate,
                 data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# constructor: optimizer of the trainable parameters only (see configs/_base_/schedules/polyhistor_60e.py)
optim_wrapper = dict(type='OptimWrapper', constructor='TrainableOnlyOptimWrapperConstructor',
                     optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.01))
param_scheduler = [dict(type='PolyLR', power=1.0, begin=0, end=400, eta_min=1e-5, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=400, val_interval=200)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=200, max_keep_ckpts=2))
custom_hooks = [
    dict(type='TrainableParamsHook', expect_frozen=[r'backbone\..*weight$']),
    dict(type='DeltaCheckpointHook'),
]
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
