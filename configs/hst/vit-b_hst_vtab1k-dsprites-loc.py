# HST with a frozen ImageNet-21k ViT-B/16 on VTAB-1k dSprites/location (structured group, 16 classes).
# Same model and schedule as the CIFAR-100 config; only the task differs.
_base_ = ['./vit-b_hst_vtab1k-cifar100.py']

task = 'dsprites_loc'
num_classes = 16

model = dict(head=dict(num_classes=num_classes))
data_preprocessor = dict(num_classes=num_classes)
train_dataloader = dict(dataset=dict(task=task, num_classes=num_classes))
val_dataloader = dict(dataset=dict(task=task, num_classes=num_classes))
test_dataloader = val_dataloader
