# Comparison row (paper Table 5, "Full fine-tuning", 127.0M): the ImageNet-21k ViT-B/16 trains too,
# with [29]'s simple multi-scale adaptation (mmpeft's ViTPyramid); UperNet 160k, same optimiser as
# the HST row, no weight decay on norms / position embedding / tokens.
_base_ = ['./upernet_vit-b_linear-probe_160k_ade20k-512x512.py']

model = dict(backbone=dict(finetune='full'))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.), 'cls_token': dict(decay_mult=0.)}))

custom_hooks = [dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.'])]
