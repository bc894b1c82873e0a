# Appendix G: batch 12, 60 epochs, Adam (lr 1e-4, weight decay 1e-4), learning rate decreased linearly
# with the training iteration (to 0 at the end).
# constructor: the optimizer holds only the trainable parameters, named here so that it does not
# depend on import mmpeft's global fix of the default constructor (MMPEFT_DISABLE_FIXES switches it off)
optim_wrapper = dict(type='OptimWrapper', constructor='TrainableOnlyOptimWrapperConstructor',
                     optimizer=dict(type='Adam', lr=1e-4, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0, end_factor=0.0, begin=0, end=60, by_epoch=True,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=60, val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=10, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'))
