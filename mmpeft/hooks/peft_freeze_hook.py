"""PEFTFreezeHook: freeze any existing config's model from ``custom_hooks``, correctly under DDP."""
import copy
import gc
from typing import List, Sequence, Union

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict

from ..peft.policy import (
    apply_trainable,
    frozen_norm_and_dropout_modules,
    keep_in_eval,
    optimizer_param_names,
    restrict_optimizer,
)
from ..registry import HOOKS


def _wrappers(optim) -> List[OptimWrapper]:
    if isinstance(optim, OptimWrapperDict):
        return list(optim.values())
    return [optim] if isinstance(optim, OptimWrapper) else []


@HOOKS.register_module()
class PEFTFreezeHook(Hook):
    """Train only the parameters matching ``trainable`` (regexes, matched at the start of names).

    Example::

        custom_hooks = [dict(type='PEFTFreezeHook', trainable=['neck', 'decode_head', r'backbone\\..*norm'])]

    mmengine wraps the model in DDP and builds the optimizer before any hook runs, so flipping
    ``requires_grad`` alone would leave DDP expecting gradients for frozen parameters (a hang or an
    error with ``find_unused_parameters=False``), the optimizer holding frozen parameters and, worse,
    lacking the parameters the hook enables that were frozen when it was built (e.g. the
    ``requires_grad=False`` BatchNorms of a caffe-style ResNet): they would be reported trainable and
    never trained. In ``before_run`` (at ``HIGHEST`` priority, before weights are loaded or a run is
    resumed, so no optimizer state exists yet) this hook therefore

    1. sets ``requires_grad`` on the unwrapped model (an unmatched pattern is an error),
    2. re-wraps the model with the runner's own ``wrap_model`` so DDP registers only the trainable set,
    3. rebuilds the optim wrapper from ``cfg.optim_wrapper`` (so every newly enabled parameter gets
       the lr / weight decay its ``paramwise_cfg`` gives it; frozen ones are left out), re-applies
       ``auto_scale_lr`` and rebuilds the parameter schedulers on it, exactly as ``Runner.train``
       did before ``before_run``,
    4. checks that the optimizer holds exactly the trainable set and logs that set,
    5. optionally keeps frozen norm / dropout modules in eval mode during training.

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

        if wrapped and changed:
            # DDP decides at construction which parameters it reduces; rebuild it on the same module.
            old = runner.model
            runner.model = runner.wrap_model(runner.cfg.get('model_wrapper_cfg'), model)
            del old
            gc.collect()

        built = bool(_wrappers(runner.optim_wrapper))  # not built in val / test runs
        if built and changed:
            self._rebuild_optimizer(runner, model, set(enabled) - before)

        if self.frozen_eval and self._handle is None:
            # the model holds trainable heads beside the frozen backbone: their dropout keeps training
            names = frozen_norm_and_dropout_modules(model, parameterless='by_owner')
            if names:
                self._handle = keep_in_eval(model, names)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        msg = f'PEFTFreezeHook: {len(enabled)} trainable tensors ({n_train / 1e6:.2f}M parameters)'
        if built:
            held = sum(len(optimizer_param_names(model, w.optimizer)) for w in _wrappers(runner.optim_wrapper))
            msg += f', {held} of them in the optimizer' + (' (rebuilt)' if changed else '')
        runner.logger.info(msg + (', DDP re-wrapped' if wrapped and changed else ''))

    @staticmethod
    def _rebuild_optimizer(runner, model, newly_enabled: set) -> None:
        """Give the optimizer exactly the trainable set, with the config's hyper-parameters."""
        optim_cfg = runner.cfg.get('optim_wrapper')
        if optim_cfg is None:
            # Runner built from objects, not a config: only removing parameters is possible.
            for w in _wrappers(runner.optim_wrapper):
                restrict_optimizer(w.optimizer)
            if newly_enabled:
                raise RuntimeError(
                    f'PEFTFreezeHook enabled {len(newly_enabled)} parameters that were frozen when the optimizer '
                    f'was built (e.g. {sorted(newly_enabled)[:5]}), but the runner has no cfg.optim_wrapper to '
                    f'rebuild the optimizer from. Build the runner with Runner.from_cfg(cfg), or set '
                    f'requires_grad=True on them when the model is built')
        else:
            runner.optim_wrapper = runner.build_optim_wrapper(copy.deepcopy(optim_cfg))
            # as Runner.train: scale the lr before the schedulers store it, then build them on the new optimizer
            runner.param_schedulers = copy.deepcopy(runner.cfg.get('param_scheduler'))
            runner.scale_lr(runner.optim_wrapper, runner.auto_scale_lr)
            if runner.param_schedulers is not None:
                runner.param_schedulers = runner.build_param_scheduler(runner.param_schedulers)
        held = set()
        for w in _wrappers(runner.optim_wrapper):
            restrict_optimizer(w.optimizer)  # a custom constructor may keep frozen parameters
            held.update(optimizer_param_names(model, w.optimizer))
        missing = sorted(n for n, p in model.named_parameters() if p.requires_grad and n not in held)
        if missing:
            raise RuntimeError(
                f'PEFTFreezeHook: {len(missing)} trainable parameters are not in the optimizer rebuilt from '
                f'cfg.optim_wrapper, e.g. {missing[:5]}; its constructor leaves them out: include them, or add '
                f'them to `frozen` of PEFTFreezeHook')
