# HST with a frozen ImageNet-21k ViT-B/16 on CUB-200-2011 (FGVC), mmpretrain. Paper Table 3
# (in21k: 89.2% top-1, 0.78M trainable). Data: the CUB_200_2011 release under data/CUB_200_2011
# (mmpretrain's CUB dataset). Augmentation as VPT's FGVC protocol: resize to 256x256, random 224 crop,
# horizontal flip; test: resize 256x256, centre 224 crop. Schedule (the paper gives none): AdamW,
# lr 1e-3, weight decay 1e-4, batch 64, 100 epochs, 10 of warm-up, cosine decay.
_base_ = ['mmpretrain::_base_/datasets/cub_bs8_448.py', 'mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='HSTViT',
        vit_name='vit_base_patch16_224',
        embed_dims=[32, 48, 64, 72],
        num_meta_tokens=1,
        out_type='pooled',
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/jx_vit_base_patch16_224_in21k.pth')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=200,
        in_channels=72,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), interpolation='bicubic'),
    dict(type='RandomCrop', crop_size=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.), 'meta_tokens': dict(decay_mult=0.)}))
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
