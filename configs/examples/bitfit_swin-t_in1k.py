# mmpretrain quick start: BitFit on the toolbox's own Swin-T ImageNet config.
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True, type='PEFTBackbone', method=dict(type='BitFit'),
        backbone=dict(type='SwinTransformer', arch='tiny', img_size=224, drop_path_rate=0.2,
                      init_cfg=dict(type='Pretrained', checkpoint='pretrain/swin_tiny_patch4_window7_224.pth',
                                    prefix='backbone'))))
