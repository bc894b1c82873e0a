# HST (Hierarchical Side-Tuning) with a frozen ImageNet-21k ViT-B/16: Mask R-CNN, 1x schedule, COCO.
# Paper Table 4 (ViT-B, Mask R-CNN 1x: 30.6M trainable, 40.3 AP^b / 38.0 AP^m); appendix B.2.2:
# AdamW, lr 1e-4, weight decay 0.05, batch 16 (8 GPUs x 2 images).
# Backbone, weights and the trainable-set check: ./_base_/hst_vit-b_dense.py.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', './_base_/hst_vit-b_dense.py']

model = dict(
    data_preprocessor={{_base_.hst_data_preprocessor}},
    backbone={{_base_.hst_backbone}},
    neck=dict(in_channels=[64, 128, 256, 384]))

# constructor: optimizer of the trainable parameters only (see configs/_base_/schedules/polyhistor_60e.py)
optim_wrapper = dict(
    constructor='TrainableOnlyOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg={{_base_.hst_paramwise_cfg}})
