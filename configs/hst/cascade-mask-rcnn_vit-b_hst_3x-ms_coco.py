# HST with a frozen ImageNet-21k ViT-B/16: Cascade Mask R-CNN, 3x schedule with multi-scale training,
# COCO. Paper Table 4 (68.4M trainable, 49.5 AP^b / 43.0 AP^m). Optimiser per appendix B.2.2.
# Multi-scale training: mmdet's ms-3x base (shorter side in [640, 800]).
_base_ = ['mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_ms-3x_coco.py', './_base_/hst_vit-b_dense.py']

model = dict(
    data_preprocessor={{_base_.hst_data_preprocessor}},
    backbone={{_base_.hst_backbone}},
    neck=dict(in_channels=[64, 128, 256, 384]),
    # Box heads of the Swin / PVT cascade setting ("4conv1fc" with GIoU), which the paper's 68.4M
    # trainable parameters imply (mmdet's 2fc heads would give 63.5M).
    roi_head=dict(bbox_head=[
        dict(
            type='ConvFCBBoxHead',
            num_shared_convs=4,
            num_shared_fcs=1,
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
    ]))

# constructor: optimizer of the trainable parameters only (see configs/_base_/schedules/polyhistor_60e.py)
optim_wrapper = dict(
    constructor='TrainableOnlyOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg={{_base_.hst_paramwise_cfg}})

# mmdet's ms-3x instance base evaluates boxes only; a Mask R-CNN is evaluated on masks too
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = dict(metric=['bbox', 'segm'])
