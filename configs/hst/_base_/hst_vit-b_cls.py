# Shared part of the HST classification rows (VTAB-1k, FGVC, CIFAR-100; paper Tables 2-3): frozen
# ImageNet-21k ViT-B/16 + HSN-B (Cls) side network, linear head on the pooled last stage, and the
# optimisation of the authors' training scripts (train_scripts/vit/* of their release): AdamW, 100 epochs,
# 10 warm-up epochs from lr 1e-7, cosine decay to 1e-8, mixed precision (AMP).
# Not a row itself: _base_/hst_vit-b_vtab1k.py and _base_/hst_vit-b_fgvc.py add the data, and each row
# sets num_classes, lr, weight decay and drop path, and restates the warm-up (its start factor is
# 1e-7 / lr, which a base cannot compute from a row's lr).
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='HSTViT',
        vit_name='vit_base_patch16_224',
        embed_dims=[32, 48, 64, 72],  # Table 1, HSN-B (Cls)
        num_meta_tokens=1,
        # the authors' --drop-path: stochastic depth of the Side blocks and, by default
        # (vit_drop_path_rate=None), of the frozen ViT's blocks too; each row sets it
        drop_path_rate=0.0,
        out_type='pooled',  # mean of the last stage, then the released BatchNorm1d (no affine) fc_norm
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/jx_vit_base_patch16_224_in21k.pth')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=None,  # set by each row
        in_channels=72,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

# Mixed precision as the scripts' --amp (torch.cuda.amp autocast + dynamic loss scaling). It needs a GPU:
# on a CPU pass --cfg-options optim_wrapper.type=OptimWrapper (float32).
# Every trainable tensor gets weight decay, the Meta-Register tokens and LayerNorms too (no paramwise_cfg).
lr = 1e-3  # placeholder: each row sets its own
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='TrainableOnlyOptimWrapperConstructor',  # trainable parameters only, even with the global fix off
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=5e-2))
# linear warm-up 1e-7 -> lr over 10 epochs (per iteration), cosine to 1e-8 over the other 90
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-7 / lr, by_epoch=True, begin=0, end=10, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-8, by_epoch=True, begin=10, end=100, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=10)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=1))
randomness = dict(seed=42)  # the scripts' default --seed

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\.side_network\.', r'backbone\.bridge\.', r'backbone\.meta_tokens'],
         expect_frozen=[r'backbone\.vit\.(cls_token|pos_embed|patch_embed|norm\.)',
                        r'backbone\.vit\.blocks\.\d+\.(attn|mlp)\.']),
]
