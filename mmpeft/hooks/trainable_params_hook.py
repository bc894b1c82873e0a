"""TrainableParamsHook: report and verify the trainable set before training starts."""
from typing import Sequence, Union

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict

from ..peft.policy import match_names, optimizer_param_names
from ..registry import HOOKS
from ..utils.param_count import count_params, format_param_table


@HOOKS.register_module()
class TrainableParamsHook(Hook):
    """Log the Encoder / Neck / Heads / All parameter table and check the trainable set.

    Runs in ``before_train`` (after freezing, loading and resuming). Errors, each naming the problem:

    - the trainable set is empty;
    - a pattern in ``expect_trainable`` matches no parameter, or matches frozen ones;
    - a pattern in ``expect_frozen`` matches a trainable parameter;
    - (``check_optimizer``) the optimizer holds a frozen parameter, or misses a trainable one.

    Args:
        expect_trainable: patterns that must match only trainable parameters (and match something).
        expect_frozen: patterns that must match only frozen parameters.
        check_optimizer: compare the optimizer's parameters with the trainable set.
    """

    priority = 'VERY_HIGH'

    def __init__(self, expect_trainable: Union[str, Sequence[str], None] = None,
                 expect_frozen: Union[str, Sequence[str], None] = None, check_optimizer: bool = True):
        self.expect_trainable = expect_trainable
        self.expect_frozen = expect_frozen
        self.check_optimizer = check_optimizer

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        counts = count_params(model)
        runner.logger.info('\n' + format_param_table(counts, f'Parameters of {type(model).__name__}:'))
        params = dict(model.named_parameters())
        trainable = {n for n, p in params.items() if p.requires_grad}
        if not trainable:
            raise RuntimeError(f'the trainable set of {type(model).__name__} is empty: nothing would be trained')
        if self.expect_trainable:
            hits, per = match_names(params, self.expect_trainable, 'expect_trainable')
            frozen_hits = {p: [n for n in ns if n not in trainable] for p, ns in per.items()}
            bad = {p: ns[:5] for p, ns in frozen_hits.items() if ns}
            if bad:
                raise RuntimeError(f'expect_trainable pattern(s) match frozen parameters: {bad}')
        if self.expect_frozen:
            _, per = match_names(params, self.expect_frozen, 'expect_frozen')
            bad = {p: [n for n in ns if n in trainable][:5] for p, ns in per.items()}
            bad = {p: ns for p, ns in bad.items() if ns}
            if bad:
                raise RuntimeError(f'expect_frozen pattern(s) match trainable parameters: {bad}')
        if self.check_optimizer:
            optim = runner.optim_wrapper
            wrappers = list(optim.values()) if isinstance(optim, OptimWrapperDict) else [optim]
            held = set()
            for w in wrappers:
                if isinstance(w, OptimWrapper):
                    held.update(optimizer_param_names(model, w.optimizer))
            frozen_held = sorted(n for n in held if n in params and not params[n].requires_grad)
            missing = sorted(trainable - held)
            if frozen_held:
                raise RuntimeError(f'the optimizer holds {len(frozen_held)} frozen parameters, e.g. '
                                   f'{frozen_held[:5]}: something froze them after the optimizer was built; '
                                   f'freeze at build time or with PEFTFreezeHook (which rebuilds the optimizer)')
            if missing:
                raise RuntimeError(f'{len(missing)} trainable parameters are not in the optimizer and would never '
                                   f'be updated, e.g. {missing[:5]}: something enabled them after the optimizer '
                                   f'was built; enable them at build time or with PEFTFreezeHook (which rebuilds '
                                   f'the optimizer)')
