# mmdet quick start: LayerNorm tuning on the toolbox's own Swin-T Mask R-CNN config.
# The backbone loads the official Microsoft file as it is downloaded:
#   wget https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth -P pretrain/  # noqa: E501
# mmdet's Swin converts the official layout itself with convert_weights=True (without it, 0 tensors
# would load); PEFTBackbone checks that every backbone weight was loaded.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True, type='PEFTBackbone', method=dict(type='LNTuning'),
        backbone=dict(
            type='SwinTransformer', embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
            window_size=7, mlp_ratio=4, qkv_bias=True, drop_path_rate=0.2, patch_norm=True,
            out_indices=(0, 1, 2, 3), convert_weights=True,
            init_cfg=dict(type='Pretrained', checkpoint='pretrain/swin_tiny_patch4_window7_224.pth'))))
# the toolbox's optimizer, given only the trainable parameters (without it they depend on import mmpeft's
# global fix of the default constructor, which MMPEFT_DISABLE_FIXES switches off)
optim_wrapper = dict(constructor='TrainableOnlyOptimWrapperConstructor')
