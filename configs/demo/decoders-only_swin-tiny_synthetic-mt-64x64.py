# Demo comparison row: the same pretrained tiny Swin frozen, only the four All-MLP decoders train.
_base_ = ['./_base_/synthetic-mt_swin-tiny_64x64.py']

model = dict(backbone=dict(
    type='PEFTBackbone', method=dict(type='FrozenBackbone'),
    backbone=dict(type='PretrainedSwin', embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                  window_size=4, mlp_ratio=4, out_indices=(0, 1, 2, 3), drop_path_rate=0.0,
                  init_cfg=dict(type='Pretrained', checkpoint={{_base_.pretrained}}))))
custom_hooks = [dict(type='TrainableParamsHook', expect_frozen=[r'backbone\.'])]
