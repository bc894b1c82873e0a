"""Several PEFT methods on one backbone, and NOAH (Zhang et al., 2022) as one of them.

:class:`Combined` injects each of its methods through the backbone's one attachment, all sharing one
task switch, so a config line ``method=dict(type='Combined', methods=[...])`` stacks e.g. an adapter,
LoRA and prompts; what trains is everything they injected.

:class:`NOAH` is the combination Neural Prompt Search searches over: an Adapter, LoRA and VPT-deep
prompts in every block. NOAH picks per layer and per task the adapter width, the LoRA rank and the prompt
length by a one-shot architecture search; mmpeft builds a chosen sub-network, the sizes given by the
config (one per module type, the same in every block), without the search. The defaults 5 / 5 / 5 give
0.33M on ViT-B/16 (+ the head: 0.37M with VTAB-1k's mean head), HST Table 2's NOAH row being 0.36M.
Placements are those of mmpeft's single methods, which NOAH's description matches: the adapter after
each MLP (sequential, ReLU, no own LayerNorm: the HST tables' Adapter row), LoRA on the query and value
projections (the LoRA row), prompts at every block (the VPT-deep row).
"""
from typing import List, Optional, Sequence

from ..registry import PEFT_METHODS
from .taskwise import TaskWiseMethod


@PEFT_METHODS.register_module()
class Combined(TaskWiseMethod):
    """Inject several methods into one backbone.

    Args:
        methods: configs of methods that inject modules (LoRA, Adapter, VPT, SSF, PHM ...), applied in
            order; each may not set its own ``num_tasks`` / ``tasks`` (the combination's are used).
        num_tasks, tasks, frozen_eval: see :class:`~mmpeft.peft.taskwise.TaskWiseMethod`.
    """

    def __init__(self, methods: Sequence[dict], num_tasks: Optional[int] = None,
                 tasks: Optional[Sequence[str]] = None, frozen_eval: bool = True):
        super().__init__(num_tasks=num_tasks, tasks=tasks, frozen_eval=frozen_eval)
        if not methods:
            raise ValueError(f'{type(self).__name__}: methods is empty; give a list of method configs')
        self.methods: List[TaskWiseMethod] = []
        for i, cfg in enumerate(methods):
            if not isinstance(cfg, dict) or 'type' not in cfg:
                raise TypeError(f'{type(self).__name__}: methods[{i}] must be a method config dict with a type, '
                                f'got {cfg!r}')
            clash = [k for k in ('num_tasks', 'tasks') if k in cfg]
            if clash:
                raise ValueError(f'{type(self).__name__}: methods[{i}] ({cfg["type"]}) sets {clash}; set them once, '
                                 f'on the {type(self).__name__} method')
            method = PEFT_METHODS.build(dict(cfg))
            if not isinstance(method, TaskWiseMethod):
                raise TypeError(f'{type(self).__name__}: methods[{i}] {cfg["type"]} injects no modules (a parameter '
                                f'selection such as LNTuning); combine methods that inject modules')
            method.switch = self.switch  # one task argument for all of them
            self.methods.append(method)

    def _inject(self, peft) -> None:
        for method in self.methods:
            method._inject(peft)
        why = [f'{type(m).__name__}: {m._not_checkpointable}' for m in self.methods if m._not_checkpointable]
        self._not_checkpointable = '; '.join(why)

    def __repr__(self) -> str:
        return f'{type(self).__name__}({", ".join(map(repr, self.methods))})'


@PEFT_METHODS.register_module()
class NOAH(Combined):
    """NOAH's Adapter + LoRA + VPT-deep in every block, with the sizes given (see the module docstring).

    Args:
        adapter_dims: the adapter's hidden width (NOAH's adapter embedding dimension).
        lora_rank: LoRA's rank on the query and value projections.
        num_prompts: VPT-deep prompt tokens per block.
        lora_scaling: LoRA's output scale (alpha / r).
        **kwargs: ``num_tasks`` / ``tasks``, ``frozen_eval``.
    """

    def __init__(self, adapter_dims: int = 5, lora_rank: int = 5, num_prompts: int = 5,
                 lora_scaling: float = 1.0, **kwargs):
        super().__init__(methods=[
            dict(type='Adapter', hidden_dims=adapter_dims, position='mlp', with_norm=False),
            dict(type='LoRA', rank=lora_rank, targets=('q', 'v'), scaling=lora_scaling),
            dict(type='VPTDeep', num_tokens=num_prompts)], **kwargs)
        self.adapter_dims, self.lora_rank, self.num_prompts = adapter_dims, lora_rank, num_prompts
