"""Task-wise module sets and the base class of methods that inject modules.

On the multi-task benchmark every single-task method holds T task-wise sets of its modules
(Polyhistor sec. 5.2: "we place task-wise modules for each task"). Task-wise parameters are stored
with a leading task axis ``(T, ...)`` and indexed in the forward, so every forward touches every
trainable tensor: DDP with ``find_unused_parameters=False`` works even when one call serves one task.

The task is an explicit argument of the backbone's forward: :func:`install_task_forward` makes
``backbone(x, task=t)`` (one task) and ``backbone(x, tasks=[...])`` (a dict of outputs, one pass per
task) work; the :class:`TaskSwitch` only carries that argument down to the injected modules for the
duration of the call. With one task (the default) no argument is needed.
"""
import contextlib
import re
import types
from typing import Callable, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from .base import PEFTMethod
from .layout import attach, detach, exact_patterns, get_module, restore_window_attention

TaskKey = Union[int, str]


class TaskSwitch:
    """Which of ``T`` task-wise module sets acts in the current forward call.

    Args:
        num_tasks: T, the number of task-wise sets (1: single-task, no task argument needed).
        tasks: optional task names (then ``num_tasks`` defaults to ``len(tasks)``), so forward calls
            may say ``task='semseg'`` as well as ``task=0``.
    """

    def __init__(self, num_tasks: Optional[int] = None, tasks: Optional[Sequence[str]] = None):
        if tasks is not None:
            tasks = tuple(tasks)
            if not tasks or not all(isinstance(t, str) for t in tasks) or len(set(tasks)) != len(tasks):
                raise ValueError(f'tasks must be distinct task names, got {tasks!r}')
            if num_tasks is not None and num_tasks != len(tasks):
                raise ValueError(f'num_tasks={num_tasks} disagrees with tasks={tasks!r} ({len(tasks)} names)')
            num_tasks = len(tasks)
        num_tasks = 1 if num_tasks is None else num_tasks
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f'num_tasks must be a positive int, got {num_tasks!r}')
        self.num_tasks = num_tasks
        self.tasks = tasks
        self._index: Optional[int] = None

    def resolve(self, task: TaskKey) -> int:
        if isinstance(task, str):
            if self.tasks is None or task not in self.tasks:
                raise KeyError(f'unknown task {task!r}; this backbone\'s tasks are '
                               f'{self.tasks if self.tasks else f"indices 0..{self.num_tasks - 1}"}')
            return self.tasks.index(task)
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < self.num_tasks:
            raise KeyError(f'task {task!r} out of range: this backbone holds {self.num_tasks} task-wise '
                           f'sets{f" for {self.tasks}" if self.tasks else ""}')
        return task

    @contextlib.contextmanager
    def use(self, task: Optional[TaskKey]) -> Iterator[None]:
        previous = self._index
        self._index = None if task is None else self.resolve(task)
        try:
            yield
        finally:
            self._index = previous

    @property
    def index(self) -> int:
        """The active task's index; raises when T > 1 and the forward call named no task."""
        if self._index is not None:
            return self._index
        if self.num_tasks == 1:
            return 0
        raise RuntimeError(
            f'this backbone holds {self.num_tasks} task-wise module sets'
            f'{f" for {self.tasks}" if self.tasks else ""}: call it as backbone(x, task=...) or '
            f'backbone(x, tasks=[...])')

    def __repr__(self) -> str:
        return f'TaskSwitch(num_tasks={self.num_tasks}, tasks={self.tasks})'


def _forward_with_task(self, *args, task: Optional[TaskKey] = None,
                       tasks: Optional[Sequence[TaskKey]] = None, **kwargs):
    """``backbone(x, task=t)`` -> the backbone's outputs with task ``t``'s modules;
    ``backbone(x, tasks=[t1, t2])`` -> ``{t1: outputs, t2: outputs}`` (one pass per task)."""
    switch: TaskSwitch = self.peft_task_switch
    plain = type(self).forward
    if tasks is not None:
        if task is not None:
            raise TypeError('give either task= or tasks=, not both')
        out = {}
        for t in tasks:
            with switch.use(t):
                out[t] = plain(self, *args, **kwargs)
        return out
    with switch.use(task):
        return plain(self, *args, **kwargs)


def install_task_forward(backbone: nn.Module, switch: TaskSwitch) -> None:
    """Let ``backbone``'s forward take ``task=`` / ``tasks=`` (an instance-level forward: the class and
    its state-dict keys are untouched). Undone by :func:`remove_task_forward`.

    With T > 1 the backbone also says so the way :class:`~mmpeft.models.MultiTaskDenseModel` asks:
    ``task_conditioned = True`` and ``tasks`` (the task names, or indices when none were given), so
    the model calls it as ``backbone(x, tasks=[...])`` and gets ``{task: features}``.
    """
    if 'forward' in backbone.__dict__:
        raise RuntimeError(f'{type(backbone).__name__} already has an instance-level forward '
                           f'(was a PEFT method applied twice?)')
    if switch.num_tasks > 1:
        taken = [a for a in ('task_conditioned', 'tasks') if hasattr(backbone, a)]
        if taken:
            raise ValueError(f'{type(backbone).__name__} already has {taken}: it is task-conditioned '
                             f'itself, task-wise PEFT modules do not apply to it')
        backbone.task_conditioned = True
        backbone.tasks = list(switch.tasks) if switch.tasks else list(range(switch.num_tasks))
    backbone.peft_task_switch = switch
    backbone.forward = types.MethodType(_forward_with_task, backbone)


def remove_task_forward(backbone: nn.Module) -> None:
    switch = backbone.__dict__.pop('peft_task_switch', None)
    backbone.__dict__.pop('forward', None)
    if switch is not None and switch.num_tasks > 1:
        for key in ('task_conditioned', 'tasks'):
            backbone.__dict__.pop(key, None)


def declare_added_keys(backbone: nn.Module, names: Sequence[str]) -> None:
    """Tell a strict checkpoint loader of the backbone that ``names`` (and what is under them) are
    new, not missing from the pretrained checkpoint: the ``_added_keys`` regex that
    :class:`~mmpeft.backbones.PretrainedSwin` honours."""
    if not names:
        return
    own = '|'.join(rf'{re.escape(n)}(\.|$)' for n in names)
    if hasattr(backbone, '_added_keys'):
        previous = getattr(backbone, '_added_keys')
        pattern = rf'^({own})' if previous is None else rf'(?:{previous.pattern})|^({own})'
        backbone._added_keys = re.compile(pattern)


def injected_state_keys(module: nn.Module) -> List[str]:
    """State-dict keys of ``module`` (relative to it) that belong to mmpeft-injected modules.

    Strict pretrained-weight loaders skip these: they are new, not missing from the checkpoint. Works
    for any sub-module of a PEFT backbone (e.g. the timm ViT inside a wrapper).
    """
    prefixes = [n + '.' for n, m in module.named_modules() if isinstance(m, TaskWise) and n]
    return [k for k in module.state_dict() if any(k.startswith(p) for p in prefixes)]


def forward_for_task(backbone: nn.Module, x: torch.Tensor, task: Optional[TaskKey] = None):
    """Call ``backbone`` for ``task`` if it holds task-wise modules, else plainly (shared backbone)."""
    if task is not None and 'peft_task_switch' in backbone.__dict__:
        return backbone(x, task=task)
    return backbone(x)


def check_task_capable(backbone: nn.Module, switch: TaskSwitch) -> None:
    """Task-wise sets and activation checkpointing do not mix: a checkpointed block is recomputed in
    the backward pass, after the forward call (and its task) has ended."""
    if switch.num_tasks > 1:
        cp = [n for n, m in backbone.named_modules() if getattr(m, 'with_cp', False)]
        if cp:
            raise ValueError(f'num_tasks={switch.num_tasks} needs with_cp=False in the backbone '
                             f'(checkpointed modules: {cp[:3]}{" ..." if len(cp) > 3 else ""})')


class TaskWise(nn.Module):
    """Base of injected modules that hold task-wise parameters ``(T, ...)``.

    The switch is kept as a plain attribute (not a submodule) shared by every injected module of one
    method; ``self.t`` is the active task's index.
    """

    def __init__(self, switch: TaskSwitch):
        super().__init__()
        self.switch = switch

    @property
    def num_tasks(self) -> int:
        return self.switch.num_tasks

    @property
    def t(self) -> int:
        return self.switch.index

    def extra_repr(self) -> str:
        return f'num_tasks={self.num_tasks}'


def is_peft_hook(hook: Callable) -> bool:
    """Whether a registered hook was installed by an mmpeft method (a method of a :class:`TaskWise`)."""
    return isinstance(getattr(hook, '__self__', None), TaskWise)


def remove_peft_hooks(backbone: nn.Module) -> int:
    """Remove every forward (pre-)hook installed by mmpeft methods; returns how many."""
    removed = 0
    for m in backbone.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks):
            for k in [k for k, h in hooks.items() if is_peft_hook(h)]:
                del hooks[k]
                for extra in ('_forward_hooks_with_kwargs', '_forward_hooks_always_called',
                              '_forward_pre_hooks_with_kwargs'):
                    getattr(m, extra, {}).pop(k, None)
                removed += 1
    return removed


class TaskWiseMethod(PEFTMethod):
    """Base of the methods that inject modules (LoRA, adapters, PHM / Compacter, VPT, SSF, task-wise
    selection). Subclasses implement :meth:`_inject` and add each new module with :meth:`_add`.

    Args:
        num_tasks: T, the number of task-wise module sets (default 1).
        tasks: task names instead of (or agreeing with) ``num_tasks``.
        frozen_eval: see :class:`~mmpeft.peft.base.PEFTMethod`.
    """

    def __init__(self, num_tasks: Optional[int] = None, tasks: Optional[Sequence[str]] = None,
                 frozen_eval: bool = True):
        super().__init__(frozen_eval=frozen_eval)
        self.switch = TaskSwitch(num_tasks, tasks)
        self.injected: List[str] = []

    @property
    def num_tasks(self) -> int:
        return self.switch.num_tasks

    # -- interface -----------------------------------------------------------------------------
    def inject(self, backbone: nn.Module) -> None:
        if self.injected:
            raise RuntimeError(f'{type(self).__name__} was already injected; build one method per backbone')
        check_task_capable(backbone, self.switch)
        self._inject(backbone)
        install_task_forward(backbone, self.switch)
        declare_added_keys(backbone, self.injected)

    def _inject(self, backbone: nn.Module) -> None:
        raise NotImplementedError

    def _add(self, backbone: nn.Module, owner: str, attr: str, child: nn.Module) -> nn.Module:
        self.injected.append(attach(backbone, owner, attr, child))
        return child

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        return exact_patterns(self.injected)

    def init_weights(self, backbone: nn.Module) -> None:
        for name in self.injected:
            m = get_module(backbone, name)
            if hasattr(m, 'reset_parameters'):
                m.reset_parameters()

    def injected_modules(self, backbone: nn.Module) -> List[nn.Module]:
        return [get_module(backbone, n) for n in self.injected]

    def remove(self, backbone: nn.Module) -> None:
        """Undo :meth:`inject`: hooks, overridden forwards, new modules, the task argument."""
        remove_peft_hooks(backbone)
        for m in backbone.modules():
            restore_window_attention(m)
        for name in reversed(self.injected):
            detach(backbone, name)
        self.injected = []
        remove_task_forward(backbone)
        backbone.__dict__.pop('_added_keys', None)

    def _merge_task(self, task: Optional[TaskKey]) -> int:
        if task is None:
            if self.num_tasks > 1:
                raise ValueError(f'{type(self).__name__} holds {self.num_tasks} task-wise sets: '
                                 f'merge(backbone, task=...) folds one of them')
            return 0
        return self.switch.resolve(task)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(num_tasks={self.num_tasks})'
