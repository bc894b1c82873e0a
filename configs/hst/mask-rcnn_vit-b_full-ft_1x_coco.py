# Comparison row (paper Table 4, "Full fine-tuning", 113.6M): the ImageNet-21k ViT-B/16 trains too,
# with [29]'s simple multi-scale adaptation (mmpeft's ViTPyramid). Mask R-CNN 1x, same optimiser as
# the HST row, no weight decay on norms / position embedding / tokens.
_base_ = ['./mask-rcnn_vit-b_linear-probe_1x_coco.py']

model = dict(backbone=dict(finetune='full'))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.), 'pos_embed': dict(decay_mult=0.),
                                    'cls_token': dict(decay_mult=0.)}))

custom_hooks = [dict(type='TrainableParamsHook', expect_trainable=[r'backbone\.'])]
