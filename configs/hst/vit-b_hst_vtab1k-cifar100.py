# HST with a frozen ImageNet-21k ViT-B/16 on VTAB-1k CIFAR-100 (natural group), mmpretrain.
# Paper Table 2 (ViT-B/16, 0.78M trainable with the head). Side network: Table 1, HSN-B (Cls),
# [32, 48, 64, 72]; the classifier reads the average of the last stage's map.
# Data: the VTAB-1k release layout, <data_root>/<task>/{train800val200,test}.txt with
# "relative/path.jpg label" lines (mmpeft.datasets.VTAB1kDataset). Images resized to 224x224 with no
# other augmentation (appendix B.2.1). The schedule is the usual VTAB-1k one of VPT / NOAH / SSF
# (the paper gives none): AdamW, lr 1e-3, weight decay 1e-4, batch 64, 100 epochs, 10 of warm-up,
# cosine decay.
_base_ = ['./_base_/hst_vit-b_cls.py']
custom_imports = dict(imports=['mmpeft', 'mmpeft.datasets.vtab1k'], allow_failed_imports=False)

data_root = 'data/vtab-1k'
task = 'cifar'
num_classes = 100

model = dict(head=dict(num_classes=num_classes))

# the in21k ViTs were pretrained on pixels scaled to [-1, 1]
data_preprocessor = dict(num_classes=num_classes, mean=[127.5, 127.5, 127.5],
                         std=[127.5, 127.5, 127.5], to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(224, 224), interpolation='bicubic'),
    dict(type='PackInputs'),
]
test_pipeline = train_pipeline
train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='VTAB1kDataset', data_root=data_root, task=task, split='train',
                 num_classes=num_classes, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='VTAB1kDataset', data_root=data_root, task=task, split='test',
                 num_classes=num_classes, pipeline=test_pipeline, test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
