# Multi-task dense model: PolyhistorSwin (frozen Swin-T + task-conditioned adapters) and one SegFormer
# All-MLP decoder (embedding 256) per task. Pretrained Swin-T: the official ImageNet-1k checkpoint
# swin_tiny_patch4_window7_224.pth, put in pretrain/ by the user (loaded as is, never downloaded).
model = dict(
    type='MultiTaskDenseModel',
    data_preprocessor=dict(type='MultiTaskDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    tasks=['semseg', 'parts', 'sal', 'normals'],
    loss_weights='uniform',  # appendix G; 'mti_net' = semseg 1, parts 2, sal 5, normals 10
    backbone=dict(
        type='PolyhistorSwin',
        mode='polyhistor',
        tasks=['semseg', 'parts', 'sal', 'normals'],
        embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4,
        out_indices=(0, 1, 2, 3), drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/swin_tiny_patch4_window7_224.pth')),
    decode_head=dict(type='AllMLPHead', in_channels=[96, 192, 384, 768], channels=256))
