"""Visual Prompt Tuning (Jia et al., 2022): learnable tokens that the frozen attention attends to.

Plain ViTs (global attention), the paper's design: P prompt tokens of width d join the sequence.
VPT-shallow inserts them before the first block and they travel through every block; VPT-deep gives
every block its own P new tokens, and the previous block's prompt outputs are dropped. Prompts are
appended after the image tokens (a plain ViT block is permutation-equivariant, so the position does
not matter) and removed again at each block's output, so every intermediate feature map a backbone
returns (``out_indices``) has the plain shape; VPT-shallow carries the prompt states from one block to
the next beside the sequence, within the backbone call (:class:`PromptCarry`; under ``with_cp`` they are
inputs and outputs of each checkpointed block).

Swin (windowed attention, shifted windows, patch merging): **prompts are extra keys and values of
every window.** Each block's P prompts (width d of that stage) go through the block's frozen ``qkv``
projection and are appended to the keys and values of *every* window; they get no relative position
bias and no shift mask (a prompt has no position, so every window sees it whatever the shift, and
padding for sizes not divisible by the window is untouched). Only the image tokens are queries, so
there is no prompt output to carry through shifted-window reversal or patch merging. VPT-deep: every
block has its own prompts (Polyhistor's 50 per layer: 50 * sum_blocks d = 0.22M per task, 0.88M for 4
tasks on Swin-T); VPT-shallow: prompts at the first block only (50 * 96 per task, 0.02M for 4).
Prompts that act as keys/values only are what VPT-deep does on a ViT anyway (each layer's prompt
outputs are discarded), minus the block's LayerNorm, which learnable prompts do not need.
"""
import contextlib
import math
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from ..registry import PEFT_METHODS
from .layout import find_blocks, get_module
from .taskwise import TaskSwitch, TaskWise, TaskWiseMethod


class PromptCarry:
    """VPT-shallow's prompt states between the blocks of the backbone call in flight (plain ViT): set by a
    block's output hook, read by the next block's input hook, cleared at the start and end of each call.
    Shared by the method and its prompts as a plain attribute; a deep copy or a pickle starts empty."""

    def __init__(self):
        self.tensor: Optional[torch.Tensor] = None

    def clear(self, *args) -> None:
        self.tensor = None

    def __deepcopy__(self, memo):
        return PromptCarry()

    def __reduce__(self):
        return PromptCarry, ()


class PromptTokens(TaskWise):
    """P prompt tokens of width d for each of T tasks: ``prompts`` (T, P, d).

    Token insertion hooks (plain ViT) are methods of this module; ``tokens()`` (P, d) feeds Swin's
    windowed attention.
    """

    def __init__(self, switch: TaskSwitch, num_tokens: int, dims: int, init_bound: float):
        super().__init__(switch)
        self.init_bound = init_bound
        self.prompts = nn.Parameter(torch.empty(switch.num_tasks, num_tokens, dims))
        self.reset_parameters()

    @property
    def num_tokens(self) -> int:
        return self.prompts.shape[1]

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.prompts, -self.init_bound, self.init_bound)

    def tokens(self) -> torch.Tensor:
        return self.prompts[self.t]

    def _joined(self, args, p: torch.Tensor):
        x = args[0]
        return (torch.cat([x, p.expand(x.shape[0], -1, -1)], dim=1),) + args[1:]  # p: (1 or B, P, d)

    # -- VPT-deep on a plain ViT: this block's prompts in, their outputs out (VPT-shallow's first block
    # takes its prompts the same way) ------------------------------------------------------------------
    def insert(self, module: nn.Module, args):
        return self._joined(args, self.tokens().unsqueeze(0))

    def strip(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        return output[:, :-self.num_tokens]

    # -- VPT-shallow on a plain ViT: later blocks take the carried states
    def insert_carried(self, module: nn.Module, args):
        if self.carry.tensor is None:
            raise RuntimeError('VPT-shallow: a later block ran before the first one in this backbone call')
        return self._joined(args, self.carry.tensor)

    def strip_carried(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        self.carry.tensor = output[:, -self.num_tokens:]
        return output[:, :-self.num_tokens]

    def strip_last(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        self.carry.tensor = None  # the last block's prompt outputs are not used: dropping them frees their graph
        return output[:, :-self.num_tokens]

    def extra_repr(self) -> str:
        return f'num_tasks={self.num_tasks}, num_tokens={self.num_tokens}, dims={self.prompts.shape[2]}'


def _prompt_init_bound(backbone: nn.Module, dims: int) -> float:
    """VPT's Xavier-uniform bound ``sqrt(6 / (fan_in + d))`` with fan_in = 3 * patch^2 of the patch
    embedding (the first Conv2d), or ``d`` when there is none."""
    conv = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] if conv is not None else dims
    return math.sqrt(6.0 / (fan_in + dims))


@PEFT_METHODS.register_module()
class VPT(TaskWiseMethod):
    """Visual prompt tuning.

    Args:
        num_tokens: P, prompts per layer (Polyhistor: 50, "the best hyper-parameter").
        deep: new prompts at every block (VPT-deep) instead of at the first only (VPT-shallow).
        num_tasks, tasks: T task-wise sets (see :class:`~mmpeft.peft.taskwise.TaskWiseMethod`).
    """

    def __init__(self, num_tokens: int = 50, deep: bool = True, num_tasks: Optional[int] = None,
                 tasks: Optional[Sequence[str]] = None, frozen_eval: bool = True):
        super().__init__(num_tasks=num_tasks, tasks=tasks, frozen_eval=frozen_eval)
        if not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f'num_tokens must be a positive int, got {num_tokens!r}')
        self.num_tokens, self.deep = num_tokens, deep
        self.carry = PromptCarry()  # VPT-shallow on a plain ViT

    def _inject(self, peft) -> None:
        backbone = peft.model
        blocks = find_blocks(backbone)
        if any(b.family == 'pvt' for b in blocks):
            raise ValueError(f'{type(self).__name__} does not support mmdet PyramidVisionTransformer (PVT): its blocks '
                             f'reshape the token sequence to the (H, W) map (spatial reduction of keys / values, '
                             f'MixFFN convolutions), so prompt tokens cannot join it. Fix: another method on PVT '
                             f'(LoRA, BitFit, adapters, Polyhistor), or VPT on a Swin / ViT backbone')
        windowed = {b.windowed for b in blocks}
        if len(windowed) > 1:
            raise ValueError(f'{type(backbone).__name__} mixes windowed and global attention blocks; '
                             f'VPT supports one kind')
        bound = _prompt_init_bound(backbone, blocks[0].dims)
        chosen = blocks if self.deep else blocks[:1]
        for blk in chosen:
            prompts = peft.add(blk.name, 'vpt', PromptTokens(self.switch, self.num_tokens, blk.dims, bound))
            if blk.windowed:
                peft.window_attention(blk.attn, extra_kv=prompts.tokens)
            elif self.deep:
                peft.hook(blk.name, prompts.insert, pre=True)
                peft.hook(blk.name, prompts.strip)
        if not blocks[0].windowed and not self.deep:
            # the prompt states travel beside the sequence from block to block, within one backbone call
            prompts = get_module(backbone, peft.injected[0])
            vars(prompts)['carry'] = self.carry
            peft.hook('', self.carry.clear, pre=True, gated=False)
            peft.hook('', self.carry.clear, always_call=True, gated=False)
            for i, blk in enumerate(blocks):
                peft.hook(blk.name, prompts.insert if i == 0 else prompts.insert_carried, pre=True)
                peft.hook(blk.name, prompts.strip_last if i == len(blocks) - 1 else prompts.strip_carried)

    # -- with_cp: a checkpointed block's carried prompt states are its inputs and outputs -----------
    def capture_call(self):
        return None, ([self.carry.tensor] if self.carry.tensor is not None else [])

    @contextlib.contextmanager
    def use_call(self, state, tensors):
        previous = self.carry.tensor
        self.carry.tensor = tensors[0] if tensors else None
        try:
            yield
        finally:
            self.carry.tensor = previous

    def call_outputs(self) -> List[torch.Tensor]:
        return [self.carry.tensor] if self.carry.tensor is not None else []

    def set_call_outputs(self, tensors: List[torch.Tensor]) -> None:
        if tensors:
            self.carry.tensor = tensors[0]

    def __repr__(self) -> str:
        return f'VPT(num_tokens={self.num_tokens}, deep={self.deep}, num_tasks={self.num_tasks})'


@PEFT_METHODS.register_module()
class VPTDeep(VPT):
    """VPT with new prompts at every block."""

    def __init__(self, num_tokens: int = 50, **kwargs):
        super().__init__(num_tokens=num_tokens, deep=True, **kwargs)


@PEFT_METHODS.register_module()
class VPTShallow(VPT):
    """VPT with prompts at the first block only."""

    def __init__(self, num_tokens: int = 50, **kwargs):
        super().__init__(num_tokens=num_tokens, deep=False, **kwargs)
