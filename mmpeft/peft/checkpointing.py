"""Activation checkpointing of an attached backbone's blocks that recomputes under the forward's task.

A checkpointed block keeps only its input in the forward pass and recomputes its activations in the
backward pass. The toolboxes' ``with_cp`` (mmseg / mmdet / mmpretrain Swin) and timm's
``grad_checkpointing`` call ``torch.utils.checkpoint`` from inside their own forward, so the recompute
runs after the forward call has returned: a task bound for that call (``backbone(x, task=t)``) is gone
by then, and task-wise PEFT modules would compute with no task, or another one.

:class:`BlockCheckpoint` checkpoints a block from the outside, with two public module hooks and one
autograd function, and records with each call what the recompute needs: the task, whether the PEFT
modules were enabled, the RNG state (dropout, drop path) and the autocast state. The block runs
once without autograd in the forward pass (``torch.set_grad_enabled(False)`` from a forward pre-hook);
the forward hook hands its output to :class:`_Recompute`, whose backward runs the block again, through
``module(...)`` so that every hook on it acts again, and differentiates it. The mechanism is the one of
``torch.utils.checkpoint(use_reentrant=True)``, owned here so that the task is part of the call.
"""
from contextlib import ExitStack
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle


class _Recompute(torch.autograd.Function):
    """Identity on a block's outputs in the forward; recompute and differentiate them in the backward.

    ``forward(ctx, call, *tensors)``: ``call`` holds the outputs computed without autograd (the block's
    output, then the tensors PEFT methods produced in the call for later blocks, e.g. VPT-shallow's
    carried prompt states) and the closure that recomputes them; ``tensors`` are the block's tensor
    inputs, the methods' call tensors, then the trainable parameters it may use (inputs of this function,
    so their gradients flow to them).
    """

    @staticmethod
    def forward(ctx, call: '_Call', *tensors: torch.Tensor):
        ctx.call = call
        n = call.num_inputs
        ctx.save_for_backward(*tensors[:n])
        ctx.params = tensors[n:]
        outs, call.outputs = call.outputs, None
        return outs[0] if len(outs) == 1 else tuple(outs)

    @staticmethod
    def backward(ctx, *grads: Optional[torch.Tensor]):
        call: _Call = ctx.call
        inputs = [x.detach().requires_grad_(x.requires_grad) for x in ctx.saved_tensors]
        with torch.enable_grad():
            outs = call.recompute(inputs)
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        if not pairs:  # e.g. a call under peft.disabled() on a frozen input: nothing to send back
            return (None,) * (1 + len(inputs) + len(ctx.params))
        wrt = [x for x in inputs if x.requires_grad] + [p for p in ctx.params]
        got = list(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs],
                                       allow_unused=True)) if wrt else []
        in_grads = [got.pop(0) if x.requires_grad else None for x in inputs]
        return (None, *in_grads, *got)


class _Call:
    """What one checkpointed call needs to run again in the backward pass."""

    def __init__(self, module: nn.Module, args: tuple, kwargs: dict, state: Dict[str, Any],
                 enter: Callable[[Dict[str, Any], Sequence[torch.Tensor]], ExitStack],
                 call_tensors: Sequence[torch.Tensor] = (), read_outputs: Callable[[], List[torch.Tensor]] = list):
        self.module, self.args, self.kwargs, self.state, self.enter = module, args, kwargs, state, enter
        self.tensor_pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        self.call_tensors = list(call_tensors)  # tensors methods computed for this call (generated weights ...)
        self.num_inputs = len(self.tensor_pos) + len(self.call_tensors)
        self.read_outputs = read_outputs  # the methods' outputs of this block for later blocks
        self.outputs: Optional[List[torch.Tensor]] = None

    def recompute(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        args = list(self.args)
        n = len(self.tensor_pos)
        for i, x in zip(self.tensor_pos, inputs[:n]):
            args[i] = x
        with self.enter(self.state, inputs[n:]):
            out = self.module(*args, **self.kwargs)
            return [out, *self.read_outputs()]


def call_state_providers(method) -> List[Any]:
    """The methods (``method``, or the parts of a combined one) that keep per-call state a recomputed block
    needs: they define ``capture_call() -> (state, input tensors)``, ``use_call(state, tensors)`` (a
    context), and optionally ``call_outputs() -> tensors`` / ``set_call_outputs(tensors)`` (what a block
    hands to later blocks beside its output)."""
    methods = getattr(method, 'methods', None) or ([method] if method is not None else [])
    return [m for m in methods if hasattr(m, 'capture_call')]


class BlockCheckpoint:
    """Checkpoint the blocks ``names`` of ``peft.model`` under the task of each call.

    Every trainable parameter of the model is an input of each checkpointed call (a block may use one
    that lives outside it, e.g. a PHM rule shared by every adapter, or a tied weight); those the block
    does not use get no gradient from it.

    Args:
        peft: the :class:`~mmpeft.peft.attachment.PEFTAttachment` (its switch and ``enabled`` flag).
        names: the blocks, e.g. ``stages.0.blocks.1`` or ``blocks.3``. Each must return one tensor and
            take its tensors that need a gradient as positional arguments.
    """

    def __init__(self, peft, names: Sequence[str]):
        self.peft = peft
        self.names = list(names)
        self.handles: List[RemovableHandle] = []
        self._recomputing = 0
        self._pending: List[Optional[_Call]] = []
        model = peft.model
        for name in self.names:
            block = model.get_submodule(name)
            self.handles.append(block.register_forward_pre_hook(self._pre, with_kwargs=True, prepend=True))
            self.handles.append(block.register_forward_hook(self._post, with_kwargs=True, always_call=True))

    def _params(self) -> List[nn.Parameter]:
        return [p for p in self.peft.model.parameters() if p.requires_grad]

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict):
        if self._recomputing or not torch.is_grad_enabled():
            self._pending.append(None)
            return None
        bad = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.requires_grad]
        if bad:
            raise ValueError(f'with_cp: block {type(module).__name__} got the tensor(s) {bad} that need a gradient '
                             f'as keyword arguments, which a checkpointed call cannot send one to; pass them '
                             f'positionally, or build without with_cp')
        state = self._capture(args)
        # methods may keep per-call state a block reads (task-conditioned adapters' tasks, VPT-shallow's carried
        # prompt states): captured here, restored in the recompute; its tensors are inputs of the checkpointed
        # call, so their gradients flow back
        providers = call_state_providers(self.peft.method)
        states, call_tensors, counts = [], [], []
        for m in providers:
            st, ts = m.capture_call()
            states.append(st)
            call_tensors += list(ts)
            counts.append(len(ts))
        state['call'] = (providers, states, counts)
        self._pending.append(_Call(module, args, dict(kwargs), state, self._enter, call_tensors,
                                   read_outputs=lambda: self._call_outputs(providers)))
        torch.set_grad_enabled(False)  # used as a function: the block's forward keeps no activations
        return None

    def _post(self, module: nn.Module, args: tuple, kwargs: dict, output):
        call = self._pending.pop() if self._pending else None
        if call is None:
            return None
        torch.set_grad_enabled(True)
        if output is None:  # the forward raised (this hook always runs): grad mode is back, let it propagate
            return None
        if not isinstance(output, torch.Tensor):
            raise TypeError(f'with_cp: block {type(module).__name__} returned {type(output).__name__}; mmpeft '
                            f'checkpoints blocks that return one tensor')
        extra = self._call_outputs(call.state['call'][0])
        call.outputs = [output, *extra]
        inputs = [call.args[i] for i in call.tensor_pos] + call.call_tensors
        outs = _Recompute.apply(call, *inputs, *self._params())
        if not extra:
            return outs
        # later blocks read the linked tensors (autograd gives the returned objects their history too; set
        # explicitly so that a method keeping copies is linked as well)
        self._set_call_outputs(call.state['call'][0], list(outs[1:]))
        return outs[0]

    @staticmethod
    def _call_outputs(providers) -> List[torch.Tensor]:
        return [t for m in providers if hasattr(m, 'call_outputs') for t in m.call_outputs()]

    @staticmethod
    def _set_call_outputs(providers, tensors: List[torch.Tensor]) -> None:
        for m in providers:
            if hasattr(m, 'call_outputs'):
                k = len(m.call_outputs())
                m.set_call_outputs(tensors[:k])
                tensors = tensors[k:]

    def _capture(self, args: tuple) -> Dict[str, Any]:
        """The forward's task, PEFT gate, RNG and autocast state, as the recompute must see them."""
        x = next((a for a in args if isinstance(a, torch.Tensor)), None)
        device = x.device if x is not None else torch.device('cpu')
        state: Dict[str, Any] = dict(task=self.peft.switch._index, enabled=self.peft.enabled,
                                     device=device, cpu_rng=torch.get_rng_state())
        if device.type == 'cuda':
            state['cuda_rng'] = torch.cuda.get_rng_state(device)
        kind = device.type if device.type in ('cuda', 'cpu') else 'cpu'
        state['autocast'] = (kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
        return state

    def _enter(self, state: Dict[str, Any], call_tensors: Sequence[torch.Tensor] = ()) -> ExitStack:
        stack = ExitStack()
        stack.enter_context(self.peft.switch.use(state['task']))
        providers, states, counts = state['call']
        call_tensors = list(call_tensors)
        for m, st, k in zip(providers, states, counts):
            stack.enter_context(m.use_call(st, call_tensors[:k]))
            call_tensors = call_tensors[k:]
        devices = [state['device']] if state['device'].type == 'cuda' else []
        stack.enter_context(torch.random.fork_rng(devices=devices))
        torch.set_rng_state(state['cpu_rng'])
        if devices:
            torch.cuda.set_rng_state(state['cuda_rng'], state['device'])
        kind, on, dtype = state['autocast']
        stack.enter_context(torch.autocast(kind, dtype=dtype, enabled=on))
        enabled = self.peft.enabled
        self.peft.enabled = state['enabled']
        self._recomputing += 1

        def restore() -> None:
            self._recomputing -= 1
            self.peft.enabled = enabled
        stack.callback(restore)
        return stack

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def toolbox_checkpointed(model: nn.Module) -> Tuple[List[str], List[Tuple[nn.Module, str]]]:
    """Blocks the toolboxes checkpoint themselves: ``(block names, (module, flag attribute) to switch
    off)``. mmseg / mmdet / mmpretrain blocks carry ``with_cp``; timm's ViT ``grad_checkpointing``
    checkpoints each of its ``blocks``.

    With the toolbox's checkpointing the recompute runs the block as the backward pass finds the model
    (the task, ``peft.disabled()``), not as the forward call ran it: an attached method takes those
    blocks over (:meth:`~mmpeft.peft.attachment.PEFTAttachment.checkpoint_blocks`). Under
    ``torch.compile`` torch skips ``always_call`` hooks when a compiled call raises, so a failed
    compiled call may leave grad mode off.
    """
    names, flags = [], []
    for name, m in model.named_modules():
        # a transformer block (attention + feed-forward), as layout.find_blocks sees one; a flag on a
        # stage or a whole network is not a block of its own
        is_block = isinstance(getattr(m, 'attn', None), nn.Module) and any(
            isinstance(getattr(m, a, None), nn.Module) for a in ('ffn', 'mlp'))
        if getattr(m, 'with_cp', False) is True and name and is_block:
            names.append(name)
            flags.append((m, 'with_cp'))
        if getattr(m, 'grad_checkpointing', False) is True and isinstance(getattr(m, 'blocks', None), nn.Module):
            prefix = f'{name}.blocks' if name else 'blocks'
            names += [f'{prefix}.{i}' for i in range(len(m.blocks))]
            flags.append((m, 'grad_checkpointing'))
    return names, flags
