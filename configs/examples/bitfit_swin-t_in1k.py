# mmpretrain quick start: BitFit on the toolbox's own Swin-T ImageNet config.
# The backbone loads the official Microsoft file as it is downloaded:
#   wget https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth -P pretrain/  # noqa: E501
# mmpretrain's Swin has another key layout and mmengine's Pretrained init does not convert it
# (type='Pretrained', prefix='backbone' fails with "backbone. is not in the pretrained model"), so the
# init is mmpeft's PretrainedOfficialSwin: it converts the official layout (the classifier's final norm
# becomes norm3, the 1000-class head is dropped; the head here is trained). It also accepts a file in
# mmpretrain's layout. PEFTBackbone checks that every backbone weight was loaded.
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True, type='PEFTBackbone', method=dict(type='BitFit'),
        backbone=dict(type='SwinTransformer', arch='tiny', img_size=224, drop_path_rate=0.2,
                      init_cfg=dict(type='PretrainedOfficialSwin',
                                    checkpoint='pretrain/swin_tiny_patch4_window7_224.pth'))))
# the toolbox's optimizer, given only the trainable parameters (without it they depend on import mmpeft's
# global fix of the default constructor, which MMPEFT_DISABLE_FIXES switches off)
optim_wrapper = dict(constructor='TrainableOnlyOptimWrapperConstructor')
