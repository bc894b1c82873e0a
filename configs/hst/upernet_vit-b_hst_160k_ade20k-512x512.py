# HST with a frozen ImageNet-21k ViT-B/16: UperNet, 160k iterations, ADE20K 512x512.
# Paper Table 5 (39.9M trainable, 47.0 mIoU). Appendix B.2.3: Swin's [34] settings -- AdamW, lr 6e-5,
# betas (0.9, 0.999), weight decay 0.01, no decay on norms, 1500 iterations of linear warm-up then
# linear (poly, power 1) decay, batch 16 (here 4 GPUs x 4, as the mmseg base).
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='HSTViT',
        vit_name='vit_base_patch16_224',
        embed_dims=[64, 128, 256, 384],
        num_heads=[2, 4, 8, 12],
        num_meta_tokens=1,
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/jx_vit_base_patch16_224_in21k.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 384]),
    auxiliary_head=dict(in_channels=256))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.), 'meta_tokens': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\.side_network\.', r'backbone\.bridge\.', r'backbone\.meta_tokens'],
         expect_frozen=[r'backbone\.vit\.(cls_token|pos_embed|patch_embed|norm\.)',
                        r'backbone\.vit\.blocks\.\d+\.(attn|mlp)\.']),
]
