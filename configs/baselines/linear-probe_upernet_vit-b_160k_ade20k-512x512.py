# HST paper comparison row "Linear probing" (Table 5, ViT-B, UperNet 160k, ADE20K: 41.2M trainable,
# 37.1 mIoU): the frozen ImageNet-21k ViT-B/16; [29]'s multi-scale modules and the UperNet heads train.
# Defined once, with HST's configs (ViTPyramid(finetune='linear_probe'): the frozen ViT runs without
# autograd); see configs/baselines/linear-probe_mask-rcnn_vit-b_1x_coco.py for the PEFTBackbone form.
_base_ = ['../hst/upernet_vit-b_linear-probe_160k_ade20k-512x512.py']
