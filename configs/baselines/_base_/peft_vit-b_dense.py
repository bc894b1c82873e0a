# Shared piece of the HST paper's ViT-B comparison rows on the dense 3x / 80k tables (Table 4: Mask R-CNN,
# Cascade Mask R-CNN and ATSS 3x+MS; Table 5: Semantic FPN 80k): the backbone that replaces HSTViT in the
# HST row of the same detector / schedule. It is the backbone of ./peft_mask-rcnn_vit-b_1x_coco.py: the
# ImageNet-21k ViT-B/16 + a PEFT method + [29]'s simple multi-scale adaptation of the last feature map
# (mmpeft's ViTPyramid: deconvolutions / identity / max-pool to strides 4-32, trainable). Not a row and
# not a base of its own: each base lists it beside its HST row and takes the pieces as
#   model = dict(backbone={{_base_.peft_vit_backbone}}, neck=dict(in_channels={{_base_.peft_vit_channels}}))
# (two bases may not define the same key, so the pieces go under peft_vit_* names).
peft_vit_backbone = dict(
    _delete_=True,  # replaces the HST row's HSTViT
    type='PEFTBackbone',
    backbone=dict(
        type='ViTPyramid',
        vit_name='vit_base_patch16_224',
        finetune='full',  # the ViT runs with autograd; PEFTBackbone freezes all but the method
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='pretrain/jx_vit_base_patch16_224_in21k.pth')),
    method=dict(type='FrozenBackbone'),  # placeholder: each row sets its method
    extra_trainable=[r'fpn[12]\.'])
# the four pyramid maps all have the ViT's width
peft_vit_channels = [768, 768, 768, 768]
# the HST row's parameter-wise decay without its meta-token key: no weight decay on norms
peft_vit_paramwise_cfg = dict(_delete_=True, custom_keys={'norm': dict(decay_mult=0.)})
# the trainable-set check of the frozen rows (the HST row's names the side network): the pyramid modules
# train, the ViT's weights stay frozen; each PEFT row adds its method's modules
peft_vit_trainable_hook = dict(
    type='TrainableParamsHook', expect_trainable=[r'backbone\.fpn[12]\.'],
    expect_frozen=[r'backbone\.vit\.blocks\.\d+\.(attn\.qkv|mlp\.fc1)\.weight$'])
