# Shared part of the HST classification rows (VTAB-1k, FGVC): frozen ImageNet-21k ViT-B/16 + HSN-B
# (Cls) side network, linear head on the pooled last stage, and the VTAB-1k schedule of VPT / NOAH /
# SSF (the paper gives none): AdamW, lr 1e-3, weight decay 1e-4, 100 epochs, 10 of warm-up, cosine.
# Not a row itself: each row sets its data and the head's num_classes.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='HSTViT',
        vit_name='vit_base_patch16_224',
        embed_dims=[32, 48, 64, 72],  # Table 1, HSN-B (Cls)
        num_meta_tokens=1,
        out_type='pooled',  # mean of the last stage, then the released BatchNorm1d (no affine) fc_norm
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/jx_vit_base_patch16_224_in21k.pth')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=None,  # set by each row
        in_channels=72,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

# every trainable tensor gets weight decay, the Meta-Register tokens and LayerNorms too, as in the
# authors' training script
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=10, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-8, by_epoch=True, begin=10, end=100),
]
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=10)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=1))

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\.side_network\.', r'backbone\.bridge\.', r'backbone\.meta_tokens'],
         expect_frozen=[r'backbone\.vit\.(cls_token|pos_embed|patch_embed|norm\.)',
                        r'backbone\.vit\.blocks\.\d+\.(attn|mlp)\.']),
]
