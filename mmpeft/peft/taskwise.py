"""Task-wise module sets and the base class of methods that inject modules.

On the multi-task benchmark every single-task method holds T task-wise sets of its modules
(Polyhistor sec. 5.2: "we place task-wise modules for each task"). Task-wise parameters are stored
with a leading task axis ``(T, ...)`` and indexed in the forward, so every forward touches every
trainable tensor: DDP with ``find_unused_parameters=False`` works even when one call serves one task.

The task is an argument of the call: ``backbone(x, task=t)`` (one task; the keyword is taken by the
attachment's forward pre-hook, see :class:`~mmpeft.peft.attachment.PEFTAttachment`) and
``backbone.peft.forward_tasks(x, tasks)`` (a dict of outputs, one pass per task); the
:class:`TaskSwitch` carries it down to the injected modules for the duration of that call. With one
task (the default) no argument is needed.
"""
import contextlib
from typing import Iterator, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from .base import PEFTMethod
from .checkpointing import toolbox_checkpointed
from .layout import exact_patterns, get_module

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
            if isinstance(tasks, str):  # tuple('sal') would be three one-letter tasks
                raise ValueError(f'tasks must be a list of distinct task names, got the string {tasks!r}')
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
            f'backbone.peft.forward_tasks(x, tasks)')

    def __repr__(self) -> str:
        return f'TaskSwitch(num_tasks={self.num_tasks}, tasks={self.tasks})'


def forward_for_task(backbone: nn.Module, x: torch.Tensor, task: Optional[TaskKey] = None):
    """Call ``backbone`` for ``task`` if it holds task-wise modules, else plainly (shared backbone)."""
    peft = vars(backbone).get('peft')
    if task is not None and peft is not None and peft.num_tasks > 1:
        return backbone(x, task=task)
    return backbone(x)


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


class TaskWiseMethod(PEFTMethod):
    """Base of the methods that inject modules (LoRA, adapters, PHM / Compacter, VPT, SSF, task-wise
    selection). Subclasses implement :meth:`_inject`, adding each new module with ``peft.add`` and each
    hook with ``peft.hook`` (:class:`~mmpeft.peft.attachment.PEFTAttachment`), which own them.

    Args:
        num_tasks: T, the number of task-wise module sets (default 1).
        tasks: task names instead of (or agreeing with) ``num_tasks``.
        frozen_eval: see :class:`~mmpeft.peft.base.PEFTMethod`.
    """

    def __init__(self, num_tasks: Optional[int] = None, tasks: Optional[Sequence[str]] = None,
                 frozen_eval: bool = True):
        super().__init__(frozen_eval=frozen_eval)
        self.switch = TaskSwitch(num_tasks, tasks)

    @property
    def num_tasks(self) -> int:
        return self.switch.num_tasks

    # -- interface -----------------------------------------------------------------------------
    def inject(self, peft) -> None:
        if peft.injected:
            raise RuntimeError(f'{type(self).__name__}: the backbone already holds injected modules; '
                               f'build one method per backbone')
        self._inject(peft)
        peft.install_task_argument()
        # the toolboxes' with_cp recomputes after the call has ended, under whatever task / disabled()
        # state holds then: mmpeft checkpoints those blocks itself, under the state of each call
        blocks, _ = toolbox_checkpointed(peft.model)
        if blocks:
            peft.checkpoint_blocks(blocks)

    def _inject(self, peft) -> None:
        raise NotImplementedError

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        return exact_patterns(backbone.peft.injected)

    def init_weights(self, backbone: nn.Module) -> None:
        for name in backbone.peft.injected:
            m = get_module(backbone, name)
            if hasattr(m, 'reset_parameters'):
                m.reset_parameters()

    def __repr__(self) -> str:
        return f'{type(self).__name__}(num_tasks={self.num_tasks})'
