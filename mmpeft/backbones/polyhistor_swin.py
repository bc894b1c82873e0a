"""PolyhistorSwin: the registered backbone of the Polyhistor paper's configs.

mmseg's Swin Transformer (:class:`~mmpeft.backbones.pretrained_swin.PretrainedSwin`, which loads official
Swin checkpoints strictly) with one of the paper's task-conditioned adapter methods attached, chosen by
``mode``: ``'hyperformer'`` (:class:`~mmpeft.peft.task_conditioned.Hyperformer`), ``'polyhistor'``
(:class:`~mmpeft.peft.task_conditioned.Polyhistor`) or ``'polyhistor_lite'``
(:class:`~mmpeft.peft.task_conditioned.PolyhistorLite`). The methods, their symbols, defaults and the
choices the paper leaves open are documented in :mod:`mmpeft.peft.task_conditioned`; the same methods act
on any backbone family through ``PEFTBackbone(method=dict(type='Polyhistor', tasks=...))``.

Nothing of the Swin is re-implemented here: the forward is mmseg's, and the adapters act through the
attachment's hooks (``backbone.peft``). State-dict keys are mmseg's Swin keys plus ``task_embeds``,
``adapters.stage{i}_block{j}_{attn,ffn}.*`` and, for Lite, ``template_hypernet.*``.

Calls: ``backbone(x, task='sal')`` -> the four feature maps of that task;
``backbone.peft.forward_tasks(x, tasks)`` -> ``{task: feature maps}``, as one pass over ``T*B`` images
when ``batched`` (default), else one pass per task.
"""
from typing import Optional, Sequence, Tuple, Union

from ..peft.attachment import PEFTAttachment
from ..peft.task_conditioned import POSITIONS
from ..registry import MODELS, PEFT_METHODS
from .pretrained_swin import PretrainedSwin

#: ``mode`` -> the registered method
METHODS = dict(hyperformer='Hyperformer', polyhistor='Polyhistor', polyhistor_lite='PolyhistorLite',
               task_adapters='TaskAdapters')  # the last: exported plain per-task adapters
MODES = tuple(METHODS)
DEFAULT_TASKS = ('semseg', 'parts', 'sal', 'normals')


@MODELS.register_module()
class PolyhistorSwin(PretrainedSwin):
    """Frozen mmseg Swin + task-conditioned adapters (Hyperformer, Polyhistor, Polyhistor-Lite).

    Args:
        mode: ``'polyhistor'``, ``'polyhistor_lite'`` or ``'hyperformer'``; ``'task_adapters'``: plain
            per-task adapters, what ``tools/model_converters/export_task_adapters.py`` exports them to.
        tasks: names of the ``T`` tasks (one task embedding each), default the four PASCAL-Context tasks.
        reduction_ratio, rank, embed_dims_task, factorization, positions, batched, train_backbone_norms,
            frozen_eval: the method's arguments (rho, r, k ...; see
            :class:`~mmpeft.peft.task_conditioned.TaskConditionedAdapters`). ``None``: the mode's default.
        scales: s per stage for Lite (``None``: stage width / stage-1 width, i.e. 1, 2, 4, 8).
        **kwargs: :class:`SwinTransformer` arguments (``embed_dims``, ``depths``, ``num_heads``,
            ``window_size``, ``with_cp``, ``init_cfg=dict(type='Pretrained', checkpoint=...)`` ...).
    """

    def __init__(self, mode: str, tasks: Sequence[str] = DEFAULT_TASKS,
                 reduction_ratio: Optional[int] = None, rank: Union[int, str, None] = None,
                 embed_dims_task: Optional[int] = None, scales: Optional[Sequence[int]] = None,
                 factorization: Optional[str] = None, positions: Sequence[str] = POSITIONS,
                 batched: bool = True, train_backbone_norms: bool = True, frozen_eval: bool = True,
                 **kwargs):
        if mode not in METHODS:
            raise ValueError(f'PolyhistorSwin: mode must be one of {MODES}, got {mode!r}')
        extra = dict(scales=scales) if mode == 'polyhistor_lite' else {}
        if scales is not None and mode != 'polyhistor_lite':
            raise ValueError(f"PolyhistorSwin: scales are Polyhistor-Lite's Scaling Kernel sizes; mode={mode!r} "
                             f'has none (remove scales)')
        try:  # the method checks its arguments before the Swin is built
            method = PEFT_METHODS.build(dict(
                type=METHODS[mode], tasks=tasks, reduction_ratio=reduction_ratio, rank=rank,
                embed_dims_task=embed_dims_task, factorization=factorization, positions=positions,
                batched=batched, train_backbone_norms=train_backbone_norms, frozen_eval=frozen_eval, **extra))
        except (ValueError, TypeError) as e:
            raise type(e)(f'PolyhistorSwin: {e}') from e
        super().__init__(**kwargs)
        self.mode = mode
        try:
            peft = PEFTAttachment.attach(self, method)
        except ValueError as e:
            raise ValueError(f'PolyhistorSwin: {e}') from e
        # freeze at build time: the optimizer and DDP only ever see the trainable set
        peft.freeze(method.trainable_patterns(self), frozen_eval=frozen_eval)

    @property
    def tasks(self) -> Tuple[str, ...]:
        return tuple(self.peft.tasks)

    @property
    def method(self):
        return self.peft.method

    @property
    def batched(self) -> bool:
        """Whether ``peft.forward_tasks`` runs the tasks as one pass over ``T*B`` images."""
        return self.peft.method.batched

    @batched.setter
    def batched(self, value: bool) -> None:
        self.peft.method.batched = bool(value)

    def init_weights(self) -> None:
        super().init_weights()
        # loading pretrained weights must not change the trainable set
        self.peft.restore_trainable()

    def extra_repr(self) -> str:
        return f'mode={self.mode!r}, method={self.peft.method!r}'
