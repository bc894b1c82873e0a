# Polyhistor Table 8 (MoBY-Tiny backbone), row "Low-rank adapter": 0.34M / 2.89M, -5.82%
# (Encoder / All trainable, delta_m against Table 8's single-task full fine-tuning). Same method and
# settings as the Swin-T config inherited (Table 1 row: 0.34 / 2.89); only the pretrained weights and the
# delta_m reference change. This config: 0.34M / 2.88M.
# Weights: MoBY's self-supervised Swin-T (ImageNet-1k, 300 epochs), put by the user in pretrain/; its query
# encoder is loaded, the rest of MoBY's training model left out (see README.md in this folder).
_base_ = ['../../baselines/low-rank-adapter_swin-t_pascal-context-mt-512x512.py']

model = dict(backbone=dict(backbone=dict(
    init_cfg=dict(checkpoint='pretrain/moby_swin_t_300ep_pretrained.pth', layout='moby'))))
single_task_baselines = dict(semseg=65.52, parts=61.78, sal=62.05, normals=18.14)
val_evaluator = dict(single_task_baselines=single_task_baselines)
test_evaluator = val_evaluator
