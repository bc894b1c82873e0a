# Multi-task dense model with a shared (not task-conditioned) Swin-T: PEFTBackbone applies a selection
# method (FullFinetune / FrozenBackbone) to PretrainedSwin, which loads the official checkpoint
# pretrain/swin_tiny_patch4_window7_224.pth as is; one SegFormer All-MLP decoder (embedding 256) per task.
model = dict(
    type='MultiTaskDenseModel',
    data_preprocessor=dict(type='MultiTaskDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    tasks=['semseg', 'parts', 'sal', 'normals'],
    loss_weights='uniform',
    backbone=dict(
        type='PEFTBackbone',
        method=dict(type='FullFinetune'),
        backbone=dict(
            type='PretrainedSwin',
            embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4,
            out_indices=(0, 1, 2, 3), drop_path_rate=0.0,
            init_cfg=dict(type='Pretrained', checkpoint='pretrain/swin_tiny_patch4_window7_224.pth'))),
    decode_head=dict(type='AllMLPHead', in_channels=[96, 192, 384, 768], channels=256))
