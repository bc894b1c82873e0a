"""PEFTAttachment: everything mmpeft attaches to one backbone, owned by one object (``backbone.peft``).

A PEFT method changes a backbone in four ways, and the attachment records each so that it can be
undone exactly:

1. **modules** added next to the frozen ones (``attn.w_msa.lora_qkv``, ``blocks.3.adapter_mlp``); every
   key of the plain backbone keeps its name (:meth:`add`);
2. **forward hooks** on frozen modules, bound to the injected module that computes the change
   (:meth:`hook`); their handles are kept, so :meth:`detach` removes them with the public
   ``RemovableHandle.remove``;
3. **window attention** of Swin blocks given extra keys / values or a bias table
   (:meth:`window_attention`);
4. the **trainable policy**: which parameters train, and the frozen norm / dropout modules kept in eval
   mode in training (:meth:`freeze`).

It also carries the **task protocol** of multi-task (task-wise) methods: ``backbone(x, task=t)`` runs
task ``t``'s modules (the ``task`` keyword is taken by a forward pre-hook, the class's ``forward`` is
untouched), :meth:`forward_tasks` runs several, and :meth:`task` binds one to a block of calls.

What it offers (HF peft's ``BaseTuner`` is the model):

- :meth:`detach`: the model is the plain backbone again, bit for bit (same keys, same values, same
  ``requires_grad``, no hook left);
- :meth:`merge` / :meth:`unmerge`: fold the linear methods (LoRA, SSF) into the frozen weights and back
  (one interface: an injected module with ``merge_into(base, t)`` / ``unmerge_from(base, t)``);
  :meth:`merge_and_unload` merges and detaches (the plain architecture at the plain speed);
- :meth:`disabled`: a context in which the backbone computes what the frozen backbone computes;
- :meth:`delta_state_dict`: the trainable tensors, what a PEFT checkpoint needs to store;
- :attr:`added_keys`: the regex of the keys the method added, which strict pretrained loaders skip.

Copies: hooks are bound methods of objects that ``copy.deepcopy`` copies together with the backbone
(the injected modules, the attachment), and a ``RemovableHandle`` deep-copies onto the copy's hook
dicts, so an EMA copy of the model is an independent attached model.
"""
import contextlib
import re
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from .checkpointing import BlockCheckpoint, toolbox_checkpointed
from .layout import attach as _attach_child
from .layout import detach as _detach_child
from .layout import get_module
from .policy import apply_trainable, frozen_norm_and_dropout_modules, keep_in_eval
from .taskwise import TaskKey, TaskSwitch

Patterns = Union[str, Sequence[str], None]
#: attribute (in a module's ``__dict__``) naming the children / parameters an attachment added to it
ADDED_ATTR = 'peft_added'


def injected_state_keys(module: nn.Module) -> List[str]:
    """State-dict keys of ``module`` (relative to it) that a PEFT attachment added, for any sub-module of
    an attached model (e.g. the timm ViT inside a wrapper, whose loader does not see the attachment).
    Strict pretrained-weight loaders skip them: they are new, not missing from the checkpoint."""
    prefixes = []
    for name, m in module.named_modules():
        for local in vars(m).get(ADDED_ATTR, ()):
            prefixes.append(f'{name}.{local}' if name else local)
    return [k for k in module.state_dict() if any(k == p or k.startswith(p + '.') for p in prefixes)]


class _Gated:
    """A hook that acts only while its attachment is active (not :meth:`PEFTAttachment.disabled`, not
    merged). A small object, not a closure: ``copy.deepcopy`` copies it with the model, rebinding ``fn``
    (a bound method of an injected module) and the attachment to the copies."""

    def __init__(self, peft: 'PEFTAttachment', fn: Callable, mergeable: bool):
        self.peft, self.fn, self.mergeable = peft, fn, mergeable

    @property
    def active(self) -> bool:
        return self.peft.enabled and not (self.mergeable and self.peft.merged_task is not None)

    def __call__(self, *args):
        return self.fn(*args) if self.active else None

    def __repr__(self) -> str:
        return f'mmpeft hook {getattr(self.fn, "__qualname__", self.fn)}'


class _GatedSource(_Gated):
    """An input a patched window attention asks for (prompts, a bias table): ``None`` when inactive."""

    def __call__(self):
        return self.fn() if self.active else None


class _InitWeights:
    """``model.init_weights`` of an attached backbone: ``fn(model, ...)`` (a module-level function)."""

    def __init__(self, model: nn.Module, fn: Callable):
        self.model, self.fn = model, fn

    def __call__(self, *args, **kwargs):
        return self.fn(self.model, *args, **kwargs)


class PEFTAttachment:
    """What mmpeft attached to ``model``; stored as ``model.peft`` (a plain attribute, not a module, so
    it adds no state-dict key).

    Args:
        model: the backbone.
        method: the PEFT method (``None`` for backbones whose trainable set is their own design, e.g.
            HSTViT, PolyhistorSwin: they use the policy part only).
        switch: the task switch of task-wise methods (``None``: one task).
    """

    def __init__(self, model: nn.Module, method=None, switch: Optional[TaskSwitch] = None):
        if 'peft' in vars(model):
            raise RuntimeError(f'{type(model).__name__} already has a PEFT attachment (model.peft): '
                               f'detach it first (model.peft.detach()) or build one method per backbone')
        self.model = model
        self.method = method
        self.switch = switch if switch is not None else TaskSwitch(1)
        self.injected: List[str] = []
        self.enabled = True
        self.merged_task: Optional[int] = None
        # (module name, handle, gated hook or None)
        self._hooks: List[Tuple[str, RemovableHandle, Optional[_Gated]]] = []
        # (module name, injected module name) of the mergeable sites
        self._merge_sites: List[Tuple[str, str]] = []
        self._window: List[str] = []  # window attentions made WindowAttentionExtras
        self._eval_handle: Optional[RemovableHandle] = None
        self._checkpoint: Optional[BlockCheckpoint] = None
        self._checkpoint_names: List[str] = []
        self._cp_flags: List[Tuple[nn.Module, str, bool]] = []  # toolbox checkpoint flags switched off
        self._task_handles: List[RemovableHandle] = []
        self._requires_grad: Dict[str, bool] = {n: p.requires_grad for n, p in model.named_parameters()}
        self.trainable: List[str] = []
        self.policy: Dict = {}
        self.frozen_eval_modules: List[str] = []
        self._task_stack: List[Optional[int]] = []
        self.wraps_init_weights = False  # see :meth:`wrap_init_weights`
        self.pretrained_params: List[str] = []  # plain-backbone parameters a checkpoint must fill
        self.not_pretrained: List[str] = []  # patterns of those it may leave at their init
        vars(model)['peft'] = self  # not nn.Module.__setattr__: nothing to register

    @classmethod
    def attach(cls, model: nn.Module, method) -> 'PEFTAttachment':
        """Attach ``method`` (a built PEFT method) to ``model``: its modules and hooks, no freezing
        (:meth:`freeze` sets the trainable policy). Returns ``model.peft``."""
        peft = cls(model, method, switch=getattr(method, 'switch', None))
        method.inject(peft)
        return peft

    # ------------------------------------------------------------------ building (used by methods)
    def add(self, owner: str, attr: str, child: Union[nn.Module, nn.Parameter]) -> Union[nn.Module, nn.Parameter]:
        """Register ``child`` (a module or a parameter) as ``owner.attr`` (see
        :func:`~mmpeft.peft.layout.attach`); returns it. The module that hosts it records the name in
        ``ADDED_ATTR``, so a loader that sees only part of the model (:func:`injected_state_keys`) knows the
        keys under it are new."""
        name = _attach_child(self.model, owner, attr, child)
        self.injected.append(name)
        host, _, local = name.rpartition('.')
        vars(get_module(self.model, host)).setdefault(ADDED_ATTR, set()).add(local)
        return child

    def name_of(self, child: nn.Module) -> str:
        """The full name of an injected module (its key prefix)."""
        for name in self.injected:
            if get_module(self.model, name) is child:
                return name
        raise KeyError(f'{type(child).__name__} was not added through this attachment')

    def hook(self, module: str, fn: Callable, pre: bool = False, merge_with: Optional[nn.Module] = None,
             gated: bool = True, **kwargs) -> RemovableHandle:
        """Register ``fn`` as a forward (``pre=True``: forward pre-) hook of the module named ``module``.

        Args:
            merge_with: the injected module whose ``merge_into`` / ``unmerge_from`` fold ``fn``'s effect
                into ``module`` (a mergeable site); the hook is inactive while merged.
            gated: inactive under :meth:`disabled` (False for the task protocol's own hooks).
            **kwargs: passed to torch's ``register_forward_(pre_)hook`` (``prepend``, ``with_kwargs``,
                ``always_call``).
        """
        target = get_module(self.model, module)
        g = _Gated(self, fn, mergeable=merge_with is not None) if gated else None
        register = target.register_forward_pre_hook if pre else target.register_forward_hook
        handle = register(g if g is not None else fn, **kwargs)
        self._hooks.append((module, handle, g))
        if merge_with is not None:
            self._merge_sites.append((module, self.name_of(merge_with)))
        if self._checkpoint is not None:
            self._rewrap_checkpoint()  # a later hook must still run inside the checkpointed call
        return handle

    def window_attention(self, module: str, extra_kv: Optional[Callable] = None,
                         table: Optional[Callable] = None) -> None:
        """Give the Swin window attention ``module`` extra keys / values and / or a bias table
        (:func:`~mmpeft.peft.layout.override_window_attention`), gated like the hooks."""
        from .layout import override_window_attention
        override_window_attention(get_module(self.model, module),
                                  extra_kv=_GatedSource(self, extra_kv, False) if extra_kv else None,
                                  table=_GatedSource(self, table, False) if table else None)
        if module not in self._window:
            self._window.append(module)

    def wrap_init_weights(self, fn: Callable) -> None:
        """Make ``model.init_weights()`` run ``fn(model, ...)``, which calls :meth:`plain_init_weights`
        (the class's own) and checks / completes it. torch has no hook around ``init_weights``, so this
        is an instance attribute (a picklable :class:`_InitWeights`); it is recorded here and
        :meth:`detach` removes it."""
        vars(self.model)['init_weights'] = _InitWeights(self.model, fn)
        self.wraps_init_weights = True

    def plain_init_weights(self, *args, **kwargs):
        """The backbone class's own ``init_weights``."""
        return type(self.model).init_weights(self.model, *args, **kwargs)

    def checkpoint_blocks(self, names: Sequence[str]) -> None:
        """Activation checkpointing of the blocks ``names`` that recomputes under each call's task
        (:class:`~mmpeft.peft.checkpointing.BlockCheckpoint`). The toolboxes' own checkpointing of those
        blocks (``with_cp``, timm's ``grad_checkpointing``) is switched off, so each block is
        checkpointed once; :meth:`detach` switches it back on. Call after the method's hooks exist."""
        why = getattr(self.method, '_not_checkpointable', '') if self.method is not None else ''
        if why:
            raise ValueError(f'{self.method!r} cannot run under activation checkpointing (with_cp): {why}')
        names = [n for n in names if self._checkpoint is None or n not in self._checkpoint.names]
        if not names:
            return
        chosen = set(names) | set(self.checkpointed)
        _, flags = toolbox_checkpointed(self.model)
        for m, attr in flags:
            name = self._name(m)
            blocks = ([f'{name}.blocks.{i}' if name else f'blocks.{i}' for i in range(len(m.blocks))]
                      if attr == 'grad_checkpointing' else [name])
            if set(blocks) <= chosen:  # only the flags of the blocks checkpointed here
                self._cp_flags.append((m, attr, getattr(m, attr)))
                setattr(m, attr, False)
        self._checkpoint_names = sorted(chosen, key=list(dict(self.model.named_modules())).index)
        self._rewrap_checkpoint()

    def _name(self, module: nn.Module) -> str:
        return next(n for n, m in self.model.named_modules() if m is module)

    def _rewrap_checkpoint(self) -> None:
        """(Re-)register the checkpoint hooks, outermost: the pre-hook first, the forward hook last, so
        that a recompute re-runs every other hook of the block inside the checkpointed call."""
        if self._checkpoint is not None:
            self._checkpoint.remove()
            self._checkpoint = None
        if self._checkpoint_names:
            self._checkpoint = BlockCheckpoint(self, self._checkpoint_names)

    @property
    def checkpointed(self) -> List[str]:
        """The blocks mmpeft checkpoints (see :meth:`checkpoint_blocks`)."""
        return list(self._checkpoint.names) if self._checkpoint is not None else []

    # ------------------------------------------------------------------ policy
    def freeze(self, trainable: Patterns, frozen: Patterns = None, allow_empty: bool = False,
               frozen_eval: bool = True, eval_scope: str = '',
               keep_training: Optional[Callable[[nn.Module], bool]] = None) -> List[str]:
        """Train exactly the parameters matching ``trainable`` (minus ``frozen``), freeze the rest.

        With ``frozen_eval`` the frozen norm / dropout / drop-path modules under ``eval_scope`` (a module
        name; ``''`` the whole backbone) stay in eval mode during training, so the frozen part computes
        what it was pretrained to compute; ``keep_training(module)`` exempts modules (e.g. HST's ViT
        drop path, which is part of its recipe). Returns the trainable names.
        """
        self.trainable = apply_trainable(self.model, trainable, frozen, allow_empty=allow_empty)
        self.policy = dict(trainable=[trainable] if isinstance(trainable, str) else list(trainable or []),
                           frozen=frozen, allow_empty=allow_empty, frozen_eval=frozen_eval)
        self._release_eval()
        if frozen_eval:
            scope = get_module(self.model, eval_scope)
            prefix = eval_scope + '.' if eval_scope else ''
            names = [prefix + n for n in frozen_norm_and_dropout_modules(scope)
                     if keep_training is None or not keep_training(get_module(scope, n))]
            if names:
                self._eval_handle = keep_in_eval(self.model, names)
            self.frozen_eval_modules = names
        return self.trainable

    def _release_eval(self) -> None:
        """Remove the frozen-eval rule; the modules it held in eval follow the model's mode again."""
        if self._eval_handle is not None:
            self._eval_handle.remove()
            self._eval_handle = None
        for name in self.frozen_eval_modules:
            get_module(self.model, name).train(self.model.training)
        self.frozen_eval_modules = []

    def restore_trainable(self) -> None:
        """Set ``requires_grad`` back to the policy (e.g. after a checkpoint load re-created tensors)."""
        keep = set(self.trainable)
        for n, p in self.model.named_parameters():
            p.requires_grad_(n in keep)

    # ------------------------------------------------------------------ tasks
    @property
    def num_tasks(self) -> int:
        return self.switch.num_tasks

    @property
    def tasks(self) -> List[TaskKey]:
        """The task names, or indices when the method was given none."""
        return list(self.switch.tasks) if self.switch.tasks else list(range(self.switch.num_tasks))

    def install_task_argument(self) -> None:
        """Let ``model(x, task=t)`` select task ``t`` for that call: a forward pre-hook takes the
        keyword (public ``with_kwargs`` hook API) and a forward hook that always runs restores the
        previous task, so the class's ``forward`` never sees it."""
        if self._task_handles:
            return
        self._task_handles = [
            self.model.register_forward_pre_hook(self._enter_task, with_kwargs=True, prepend=True),
            self.model.register_forward_hook(self._exit_task, always_call=True)]

    def _enter_task(self, module: nn.Module, args, kwargs):
        self._task_stack.append(self.switch._index)  # popped by _exit_task, which always runs
        if 'tasks' in kwargs:
            raise TypeError(f'{type(module).__name__}(x, tasks=...) runs one pass per task: call '
                            f'backbone.peft.forward_tasks(x, tasks) (returns {{task: outputs}})')
        task = kwargs.pop('task', None)
        if task is not None:  # no keyword: the task bound by an enclosing peft.task(...) block, if any
            self.switch._index = self.switch.resolve(task)
            self._check_merged_task(self.switch._index)
        return args, kwargs

    def _check_merged_task(self, t: int) -> None:
        if self.merged_task is not None and t != self.merged_task:
            raise RuntimeError(f'task {self.tasks[t]!r} asked, but the weights hold task '
                               f'{self.tasks[self.merged_task]!r} merged: unmerge() first')

    def _exit_task(self, module: nn.Module, args, output):
        if self._task_stack:
            self.switch._index = self._task_stack.pop()
        return None

    @contextlib.contextmanager
    def task(self, task: Optional[TaskKey]) -> Iterator[None]:
        """Run the calls inside the block with task ``task``'s modules."""
        with self.switch.use(task):
            if task is not None:
                self._check_merged_task(self.switch._index)
            yield

    def forward_tasks(self, x: torch.Tensor, tasks: Optional[Sequence[TaskKey]] = None,
                      batched: Optional[bool] = None, **kwargs) -> Dict:
        """``{task: model(x, task=task)}`` for ``tasks`` (default: all): one pass per task, or, for methods
        that can (task-conditioned adapters, ``batched``), one pass over the images of every task."""
        tasks = self.tasks if tasks is None else list(tasks)
        if hasattr(self.method, 'forward_tasks'):
            return self.method.forward_tasks(self, x, tasks, batched=batched, **kwargs)
        if batched:
            raise ValueError(f'{self.method!r} runs one pass per task; batched=True is for task-conditioned '
                             f'adapters (Hyperformer, Polyhistor, PolyhistorLite)')
        return {t: self.model(x, task=t, **kwargs) for t in tasks}

    # ------------------------------------------------------------------ use
    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Inside the block the backbone computes what the frozen backbone computes (no hook acts)."""
        if self.merged_task is not None:
            raise RuntimeError('disabled() while merged would still compute with the folded weights: '
                               'unmerge() first')
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    @property
    def mergeable(self) -> bool:
        """Whether every change the method makes folds into the frozen weights."""
        gated = [g for _, _, g in self._hooks if g is not None]
        return bool(gated) and all(g.mergeable for g in gated) and not self._window

    def _check_mergeable(self) -> None:
        if not self.mergeable:
            what = type(self.method).__name__ if self.method is not None else type(self.model).__name__
            raise ValueError(f'{what} cannot be merged into the frozen weights: only linear methods (LoRA '
                             f'without norm, SSF) fold into them; keep the backbone attached instead')

    def _sites(self):
        for module, injected in self._merge_sites:
            yield get_module(self.model, module), get_module(self.model, injected)

    @torch.no_grad()
    def merge(self, task: Optional[TaskKey] = None) -> None:
        """Fold the method (task ``task``'s set, when it holds several) into the frozen weights; the
        injected modules stay, inactive, until :meth:`unmerge`."""
        self._check_mergeable()
        if self.merged_task is not None:
            raise RuntimeError('already merged: unmerge() first')
        if task is None and self.num_tasks > 1:
            raise ValueError(f'this backbone holds {self.num_tasks} task-wise sets {self.tasks}: '
                             f'merge(task=...) folds one of them')
        t = 0 if task is None else self.switch.resolve(task)
        for base, module in self._sites():
            module.merge_into(base, t)
        self.merged_task = t

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge` (exact up to floating-point rounding)."""
        if self.merged_task is None:
            raise RuntimeError('not merged')
        for base, module in reversed(list(self._sites())):
            module.unmerge_from(base, self.merged_task)
        self.merged_task = None

    def merge_and_unload(self, task: Optional[TaskKey] = None) -> nn.Module:
        """Merge, then detach: the plain backbone with the method folded into its weights."""
        self.merge(task)
        self.merged_task = None  # the folded weights stay: detach must not unmerge
        return self.detach()

    def delta_state_dict(self) -> Dict[str, torch.Tensor]:
        """The trainable tensors (the whole PEFT checkpoint of this backbone), by state-dict key."""
        keep = set(self.trainable)
        return {k: v.detach() for k, v in self.model.state_dict(keep_vars=True).items() if k in keep}

    @property
    def added_keys(self) -> Optional['re.Pattern']:
        """Regex of the state-dict keys the method added (strict pretrained loaders skip them)."""
        if not self.injected:
            return None
        return re.compile('^(' + '|'.join(rf'{re.escape(n)}(\.|$)' for n in self.injected) + ')')

    # ------------------------------------------------------------------ undo
    def detach(self) -> nn.Module:
        """Remove everything attached: hooks, window-attention forwards, injected modules, the task
        argument, the eval rule; restore ``requires_grad``. Returns the (plain) model."""
        from .layout import restore_window_attention
        if self.merged_task is not None:
            self.unmerge()
        for _, handle, _ in self._hooks:
            handle.remove()
        for h in self._task_handles:
            h.remove()
        if self._checkpoint is not None:
            self._checkpoint.remove()
            self._checkpoint = None
        for m, attr, value in self._cp_flags:
            setattr(m, attr, value)
        self._cp_flags = []
        self._release_eval()
        for name in self._window:
            restore_window_attention(get_module(self.model, name))
        for name in reversed(self.injected):
            _detach_child(self.model, name)
            host, _, local = name.rpartition('.')
            added = vars(get_module(self.model, host)).get(ADDED_ATTR)
            if added is not None:
                added.discard(local)
                if not added:
                    vars(get_module(self.model, host)).pop(ADDED_ATTR)
        if self.wraps_init_weights:
            vars(self.model).pop('init_weights', None)
            self.wraps_init_weights = False
        for n, p in self.model.named_parameters():
            if n in self._requires_grad:
                p.requires_grad_(self._requires_grad[n])
        self._hooks, self._merge_sites, self._window, self._task_handles, self.injected = [], [], [], [], []
        self._task_stack = []
        vars(self.model).pop('peft', None)
        return self.model

    def __repr__(self) -> str:
        what = type(self.method).__name__ if self.method is not None else 'policy only'
        return (f'PEFTAttachment({what}, injected={len(self.injected)}, hooks={len(self._hooks)}, '
                f'trainable={len(self.trainable)}, num_tasks={self.num_tasks}'
                + (f', merged_task={self.merged_task}' if self.merged_task is not None else '') + ')')

    def spatial_reduction_attention(self, module: str, in_proj: Optional[Callable] = None) -> None:
        """Run the PVT ``SpatialReductionAttention`` ``module`` through
        :class:`~mmpeft.peft.layout.SpatialReductionAttentionExtras` (the toolbox's computation written out,
        bit for bit, with ``attn.attn.out_proj`` called as a module so that its hooks act), with
        ``in_proj(x_q, x_kv, q, k, v) -> (q, k, v)`` changing the projected queries / keys / values, gated
        like the hooks; several calls stack. Recorded with the window attentions: :meth:`detach` gives
        the toolbox class back, and the attachment is not mergeable."""
        from .layout import override_spatial_reduction_attention
        override_spatial_reduction_attention(get_module(self.model, module),
                                             in_proj=_Gated(self, in_proj, False) if in_proj else None)
        if module not in self._window:
            self._window.append(module)
