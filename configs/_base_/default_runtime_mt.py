# Runtime shared by the multi-task dense configs: mmseg's default runtime (default_scope='mmseg'),
# mmpeft imported so its classes register, trainable parameters reported before training.
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['mmpeft'], allow_failed_imports=False)
custom_hooks = [dict(type='TrainableParamsHook')]
log_processor = dict(by_epoch=True)
randomness = dict(seed=0)
