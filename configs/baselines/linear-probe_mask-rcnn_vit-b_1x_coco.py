# HST paper comparison row "Linear probing" (Table 4, ViT-B, Mask R-CNN 1x: 27.8M trainable, 22.1 AP^b /
# 22.6 AP^m): the frozen ImageNet-21k ViT-B/16 (decoders only); [29]'s multi-scale modules, FPN and
# heads train. The row is defined once, with HST's configs: ViTPyramid(finetune='linear_probe') runs
# the frozen ViT without autograd. As a PEFTBackbone row it reads
#   backbone=dict(type='PEFTBackbone', backbone=dict(type='ViTPyramid', finetune='full', ...),
#                 method=dict(type='FrozenBackbone'), extra_trainable=[r'fpn[12]\.'])
# (same trainable set, slower: autograd through the ViT).
_base_ = ['../hst/mask-rcnn_vit-b_linear-probe_1x_coco.py']
