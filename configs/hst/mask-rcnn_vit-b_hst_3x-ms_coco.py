# HST with a frozen ImageNet-21k ViT-B/16: Mask R-CNN, 3x schedule with multi-scale training, COCO.
# Paper Table 4 (30.6M trainable, 43.9 AP^b / 40.4 AP^m). Multi-scale training as in PVT [45]: the
# shorter side drawn from [640, 800] (mmdet's ms-poly-3x base). Optimiser per appendix B.2.2.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_ms-poly-3x_coco.py', './_base_/hst_vit-b_dense.py']

model = dict(
    data_preprocessor={{_base_.hst_data_preprocessor}},
    backbone={{_base_.hst_backbone}},
    neck=dict(in_channels=[64, 128, 256, 384]))

# constructor: optimizer of the trainable parameters only (see configs/_base_/schedules/polyhistor_60e.py)
optim_wrapper = dict(
    constructor='TrainableOnlyOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg={{_base_.hst_paramwise_cfg}})
