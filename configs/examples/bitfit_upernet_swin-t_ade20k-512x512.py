# mmseg quick start: BitFit on the toolbox's own Swin-T UperNet config (only the backbone line changes).
# The backbone loads the official Microsoft file as it is downloaded:
#   wget https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth -P pretrain/  # noqa: E501
# mmseg's own SwinTransformer would load 0 of its tensors (other key layout, strict=False); mmpeft's
# PretrainedSwin is that same class (same keys, same outputs) converting the official layout on load.
# PEFTBackbone then checks that every backbone weight was loaded (an error names any left at init).
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True, type='PEFTBackbone', method=dict(type='BitFit'),
        backbone=dict(
            type='PretrainedSwin', embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
            window_size=7, mlp_ratio=4, qkv_bias=True, drop_path_rate=0.3, patch_norm=True,
            out_indices=(0, 1, 2, 3),
            init_cfg=dict(type='Pretrained', checkpoint='pretrain/swin_tiny_patch4_window7_224.pth'))))
# the toolbox's optimizer, given only the trainable parameters (without it they depend on import mmpeft's
# global fix of the default constructor, which MMPEFT_DISABLE_FIXES switches off)
optim_wrapper = dict(constructor='TrainableOnlyOptimWrapperConstructor')
