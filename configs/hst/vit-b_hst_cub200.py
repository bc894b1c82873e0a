# HST with a frozen ImageNet-21k ViT-B/16 on CUB-200-2011 (FGVC), mmpretrain. Paper Table 3
# (in21k: 89.2% top-1, 0.78M trainable). Data: the CUB_200_2011 release under data/CUB_200_2011
# (mmpretrain's CUB dataset). Augmentation as VPT's FGVC protocol: resize to 256x256, random 224 crop,
# horizontal flip; test: resize 256x256, centre 224 crop. Schedule (the paper gives none): AdamW,
# lr 1e-3, weight decay 1e-4, batch 64, 100 epochs, 10 of warm-up, cosine decay.
_base_ = ['mmpretrain::_base_/datasets/cub_bs8_448.py', './_base_/hst_vit-b_cls.py']

model = dict(head=dict(num_classes=200))

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
