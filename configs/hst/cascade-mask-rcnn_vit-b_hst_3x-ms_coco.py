# HST with a frozen ImageNet-21k ViT-B/16: Cascade Mask R-CNN, 3x schedule with multi-scale training,
# COCO. Paper Table 4 (68.4M trainable, 49.5 AP^b / 43.0 AP^m). Optimiser per appendix B.2.2.
# Multi-scale training: mmdet's ms-3x base (shorter side in [640, 800]).
_base_ = ['mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_ms-3x_coco.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        _delete_=True,
        type='HSTViT',
        vit_name='vit_base_patch16_224',
        embed_dims=[64, 128, 256, 384],
        num_heads=[2, 4, 8, 12],
        num_meta_tokens=1,
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/jx_vit_base_patch16_224_in21k.pth')),
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

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.), 'meta_tokens': dict(decay_mult=0.)}))

# mmdet's ms-3x instance base evaluates boxes only; a Mask R-CNN is evaluated on masks too
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = dict(metric=['bbox', 'segm'])

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\.side_network\.', r'backbone\.bridge\.', r'backbone\.meta_tokens'],
         expect_frozen=[r'backbone\.vit\.(cls_token|pos_embed|patch_embed|norm\.)',
                        r'backbone\.vit\.blocks\.\d+\.(attn|mlp)\.']),
]
