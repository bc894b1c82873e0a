# Shared part of the HST dense rows (detection and segmentation): the frozen ImageNet-21k ViT-B/16 with
# the HSN-L (Det/Seg) side network, the data normalisation of the in21k ViTs, the parameter-wise
# weight decay and the trainable-set check. Not a row itself and not a base of its own: each row lists
# it beside its toolbox base and takes the pieces as
#   model = dict(data_preprocessor={{_base_.hst_data_preprocessor}}, backbone={{_base_.hst_backbone}})
#   optim_wrapper = dict(..., paramwise_cfg={{_base_.hst_paramwise_cfg}})
# (two bases may not define the same key, so the model and optimiser pieces go under hst_* names).
# Weights: pretrain/jx_vit_base_patch16_224_in21k.pth (see mmpeft/backbones/hst_vit.py for the URL);
# for the MAE checkpoint set the backbone's checkpoint='pretrain/mae_pretrain_vit_base.pth' and the data
# preprocessor's mean / std back to the ImageNet values.
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)

# the in21k ViTs were pretrained on pixels scaled to [-1, 1]
hst_data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])
hst_backbone = dict(
    _delete_=True,  # replaces the base's ResNet
    type='HSTViT',
    vit_name='vit_base_patch16_224',
    embed_dims=[64, 128, 256, 384],  # Table 1, HSN-L (Det/Seg); the necks / heads take these widths
    num_heads=[2, 4, 8, 12],
    num_meta_tokens=1,
    # the released side stem's BatchNorm, synchronised over GPUs as mmdet / mmseg configs do for small
    # per-GPU batches (mmengine reverts it to BatchNorm in a non-distributed run)
    stem_norm_cfg=dict(type='SyncBN', requires_grad=True),
    drop_path_rate=0.1,  # Side blocks and, as the authors' scripts do, the frozen ViT's blocks
    out_indices=(0, 1, 2, 3),
    init_cfg=dict(type='Pretrained', checkpoint='pretrain/jx_vit_base_patch16_224_in21k.pth'))
# no weight decay on LayerNorms (side network and the tuned ViT norms) and the meta tokens
hst_paramwise_cfg = dict(custom_keys={'norm': dict(decay_mult=0.), 'meta_tokens': dict(decay_mult=0.)})

custom_hooks = [
    dict(type='TrainableParamsHook',
         expect_trainable=[r'backbone\.side_network\.', r'backbone\.bridge\.', r'backbone\.meta_tokens'],
         expect_frozen=[r'backbone\.vit\.(cls_token|pos_embed|patch_embed|norm\.)',
                        r'backbone\.vit\.blocks\.\d+\.(attn|mlp)\.']),
]
