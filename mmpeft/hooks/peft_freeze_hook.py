"""PEFTFreezeHook: freeze any existing config's model from ``custom_hooks``, correctly under DDP."""
import gc
from typing import Optional, Sequence, Union

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict

from ..peft.policy import apply_trainable, frozen_norm_and_dropout_modules, keep_in_eval, restrict_optimizer
from ..registry import HOOKS


@HOOKS.register_module()
class PEFTFreezeHook(Hook):
    """Train only the parameters matching ``trainable`` (regexes, matched at the start of names).

    Example::

        custom_hooks = [dict(type='PEFTFreezeHook', trainable=['neck', 'decode_head', r'backbone\\..*norm'])]

    mmengine wraps the model in DDP and builds the optimizer before any hook runs, so flipping
    ``requires_grad`` alone would leave DDP expecting gradients for frozen parameters (a hang or an
    error with ``find_unused_parameters=False``) and the optimizer holding them. In ``before_run`` (at
    ``HIGHEST`` priority, before weights are loaded or a run is resumed) this hook therefore

    1. sets ``requires_grad`` on the unwrapped model (an unmatched pattern is an error),
    2. drops frozen parameters from the optimizer's groups (groups are kept, so schedulers stay aligned),
    3. re-wraps the model with the runner's own ``wrap_model`` so DDP registers only the trainable set,
    4. optionally keeps frozen norm / dropout modules in eval mode during training.

    Models that freeze themselves at build time (``PEFTBackbone``, ``HSTViT``, ``PolyhistorSwin``) do
    not need this hook.

    Args:
        trainable: pattern(s) of the parameters to train.
        frozen: pattern(s) removed from the trainable set again.
        frozen_eval: keep frozen norm / dropout / drop-path modules in eval mode while training.
    """

    priority = 'HIGHEST'

    def __init__(self, trainable: Union[str, Sequence[str]], frozen: Union[str, Sequence[str], None] = None,
                 frozen_eval: bool = True):
        if not trainable:
            raise ValueError('PEFTFreezeHook: `trainable` must name at least one pattern')
        self.trainable = trainable
        self.frozen = frozen
        self.frozen_eval = frozen_eval
        self._handle = None

    def before_run(self, runner) -> None:
        wrapped = is_model_wrapper(runner.model)
        model = runner.model.module if wrapped else runner.model
        before = {n for n, p in model.named_parameters() if p.requires_grad}
        enabled = apply_trainable(model, self.trainable, self.frozen)
        changed = before != set(enabled)

        optim = runner.optim_wrapper
        removed = 0
        if isinstance(optim, OptimWrapperDict):
            for w in optim.values():
                removed += restrict_optimizer(w.optimizer)
        elif isinstance(optim, OptimWrapper):
            removed += restrict_optimizer(optim.optimizer)
        # else: not built (val / test runs), nothing to restrict

        if wrapped and changed:
            # DDP decides at construction which parameters it reduces; rebuild it on the same module.
            old = runner.model
            runner.model = runner.wrap_model(runner.cfg.get('model_wrapper_cfg'), model)
            del old
            gc.collect()

        if self.frozen_eval and self._handle is None:
            names = frozen_norm_and_dropout_modules(model)
            if names:
                self._handle = keep_in_eval(model, names)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        runner.logger.info(f'PEFTFreezeHook: {len(enabled)} trainable tensors ({n_train / 1e6:.2f}M '
                           f'parameters), {removed} frozen tensors removed from the optimizer'
                           + (', DDP re-wrapped' if wrapped and changed else ''))
