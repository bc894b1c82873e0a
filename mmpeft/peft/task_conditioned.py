"""Task-conditioned adapters: Hyperformer, Polyhistor and Polyhistor-Lite as PEFT methods.

Three methods of the Polyhistor paper (Liu et al., NeurIPS 2022), applied like every method of the zoo:
:func:`~mmpeft.peft.layout.find_blocks` locates the blocks, so they work on the Swin of mmseg, mmdet and
mmpretrain and on plain ViTs (timm, mmpretrain), and ``method=dict(type='Polyhistor', tasks=...)`` in a
``PEFTBackbone`` config switches to them.

- :class:`Hyperformer` (baseline, eq. 2): per adapter a hyper-network ``W_hat_l in R^{k x 2dn}`` maps the
  task embedding ``V_t in R^k`` to the adapter weight ``[W_down; W_up^T] in R^{d x 2n}``.
- :class:`Polyhistor` (eq. 3): per adapter a pair of decomposed hyper-networks producing the rank-``r``
  factors ``Pi_p in R^{d x r}``, ``Pi_q in R^{2n x r}`` of that weight.
- :class:`PolyhistorLite` (eqs. 4-6): one pair of hyper-networks shared by every adapter and task, fed
  ``[V_t; V_{l,i}]`` (``k/2`` each), emits Template Kernels ``d1 x 2n1``; per task and adapter, ``s``
  Scaling Kernels ``s x s`` expand them by Kronecker products to the block's ``(d1 s) x (2 n1 s)``.

Config words are the paper's symbols: ``reduction_ratio`` (rho = d/n), ``rank`` (r; an int, or ``'n/q'``
for ``max(1, n // q)`` per adapter), ``embed_dims_task`` (k), ``scales`` (s per block width, Lite). Defaults
(:data:`MODE_DEFAULTS`) are appendix G's (Polyhistor: rho=16, r=n/4, k=64; Lite: rho=2, r=n/4, k=64) and
Tables 1/6's for Hyperformer (rho=8, k=64).

What the paper leaves open, and what is done here (counts: ``configs/polyhistor/README.md``):

- placement: two adapters per block, on the output of the attention's output projection and on the
  output of the MLP, each before drop path and the residual addition: ``x = x + h + branch(h)`` with
  ``h`` the sub-layer output (eq. 1's skip is the ``+ h``); the ``proj`` / MLP sites of the zoo's
  sequential Adapter. (On Swin the attention site sees window tokens; the adapter is per token, so the
  window order does not matter.)
- the adapter branch is ``LN_{gamma,beta}(GELU(h W_down + b_down) W_up + b_up)``; Hyperformer and
  Polyhistor generate ``b_down, b_up, gamma, beta`` from the task embedding with a per-adapter
  hyper-network (``k (n + 3d)`` parameters); Lite keeps them as per-task parameters of each adapter;
- ``gamma, beta`` start at zero, so at initialisation the model computes exactly the frozen backbone;
- the backbone's own LayerNorms train (shared by the tasks; ``train_backbone_norms``, 26k parameters on
  Swin-T), as adapter tuning since Houlsby et al. does; it matters only for Lite's small counts;
- Lite's shared pair gives ``W_down`` and ``W_up^T`` their own rank-``r`` factors
  (``factorization='per_projection'``): the paper's Lite counts (Table 2 over k, Table 3 over rho) grow
  as ``2k(d+n)r``; ``'joint'`` is eq. 5 literally (``k(d+2n)r``). Polyhistor uses ``'joint'`` (Table 5).
- Lite's template width ``d1`` is the first block's width and ``s = d / d1`` per block: Swin's stages
  (96, 192, 384, 768) give s = 1, 2, 4, 8 and PVT-Small's (64, 128, 320, 512) s = 1, 2, 5, 8. A width
  that is not a multiple of ``d1`` is an error naming the widths; ``template_dims`` sets ``d1`` to a
  common divisor instead (e.g. their gcd).

Execution. The task is an argument of the call: ``backbone(x, task='sal')`` opens the call for that task
(a forward pre-hook of the backbone) and each adapter site generates its weights for it at first use,
inside the backbone's forward. ``backbone.peft.forward_tasks(x, tasks)`` returns ``{task: output}``;
with ``batched=True`` (the default) all asked tasks run as one pass over ``T*B`` images, task-major,
each site applying the per-task weights with one ``bmm``; else one pass per task.

Hyper-networks run once per task in inference: with autograd off, the generated weights are cached per
task (and device / dtype) until a parameter may have changed: any ``torch.optim`` optimizer step, any
``load_state_dict`` of the backbone, any forward with autograd on. Parameters edited in place by other
means: call ``backbone.peft.method.clear_cache()``. ``tools/model_converters/export_task_adapters.py``
writes the generated weights as plain per-task adapters (:class:`TaskAdapters`), a model with no
hyper-network left.
"""
import re
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from ..registry import PEFT_METHODS
from .hypernet import AdapterHyperNetwork, AdapterParams, DecomposedHyperNetwork, LiteAdapterSite, adapter_branch
from .layout import exact_patterns, find_blocks
from .taskwise import TaskWiseMethod

POSITIONS = ('attn', 'ffn')

#: Defaults per method. Polyhistor / Lite: appendix G. Hyperformer: the rho=8 row of Tables 1 and 6.
MODE_DEFAULTS = {
    'hyperformer': dict(reduction_ratio=8, rank=None, embed_dims_task=64, factorization=None),
    'polyhistor': dict(reduction_ratio=16, rank='n/4', embed_dims_task=64, factorization='joint'),
    'polyhistor_lite': dict(reduction_ratio=2, rank='n/4', embed_dims_task=64, factorization='per_projection'),
    # plain per-task adapters (exported generated weights): no rank, no task embedding
    'task_adapters': dict(reduction_ratio=8, rank=None, embed_dims_task=64, factorization=None),
}


def resolve_rank(rank: Union[int, str], n: int) -> int:
    """``rank`` as an int, or ``'n/q'`` -> ``max(1, n // q)`` (e.g. n=6, 'n/4' -> 1)."""
    if isinstance(rank, bool):
        raise TypeError(f'rank must be an int or a string like "n/4", got {rank!r}')
    if isinstance(rank, int):
        if rank < 1:
            raise ValueError(f'rank must be >= 1, got {rank}')
        return rank
    if isinstance(rank, str):
        m = re.fullmatch(r'\s*n\s*/\s*(\d+)\s*', rank)
        if m and int(m.group(1)) > 0:
            return max(1, n // int(m.group(1)))
    raise ValueError(f'rank must be a positive int or a string "n/<int>" (e.g. "n/4"), got {rank!r}')


def whole(owner: str, name: str, value, allowed: str) -> int:
    """``value`` as an int if it is a whole number >= 1 (``2`` or ``2.0``); anything else is an error naming
    ``name``: ``int(2.5)`` would silently build another model than the one configured."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1 or value != int(value):
        raise ValueError(f'{owner}: {name}={value!r} is not allowed; {name} must be {allowed}')
    return int(value)


def site_name(block: str, position: str) -> str:
    """Key of an adapter site under ``adapters.``: ``stages.1.blocks.0`` + ``attn`` -> ``stage1_block0_attn``
    (the names PolyhistorSwin checkpoints have), ``blocks.3`` -> ``blocks_3_attn``."""
    m = re.fullmatch(r'(?:.*\.)?stages\.(\d+)\.blocks\.(\d+)', block)
    return f'stage{m.group(1)}_block{m.group(2)}_{position}' if m else f'{block.replace(".", "_")}_{position}'


# ----------------------------------------------------------------------------------------------------
# the generated weights of one call, and their cache
# ----------------------------------------------------------------------------------------------------
#: bumped by every optimizer step and every load_state_dict of an attached backbone: cached weights of an
#: older generation are stale
_GENERATION = [0]
_STEP_HOOK: List[Any] = []


def _bump(*_args, **_kwargs) -> None:
    _GENERATION[0] += 1


def _watch_optimizer_steps() -> None:
    """One process-wide post-hook on every ``torch.optim`` optimizer's ``step`` (public torch API)."""
    if not _STEP_HOOK:
        from torch.optim.optimizer import register_optimizer_step_post_hook
        _STEP_HOOK.append(register_optimizer_step_post_hook(_bump))


class AdapterCall:
    """The backbone call in flight, as its adapter sites see it: the task indices of its ``groups`` task
    groups (the images of group ``g`` are rows ``g*B .. (g+1)*B - 1`` of every activation), the weights the
    sites generated for them so far, and the inference cache. Shared by the sites as a plain attribute
    (like :class:`~mmpeft.peft.taskwise.TaskSwitch`); a deep copy or a pickle starts empty."""

    def __init__(self):
        self.model: Optional[nn.Module] = None  # the backbone (set at each call: the sites read its embeddings)
        self.tasks: Optional[Tuple[int, ...]] = None
        self.params: Dict[str, AdapterParams] = {}
        self.batch_tasks: Optional[List[int]] = None  # set by a batched forward_tasks
        self.cache: Dict[tuple, Dict[str, AdapterParams]] = {}
        self._stack: List[tuple] = []

    @property
    def groups(self) -> int:
        return len(self.tasks) if self.tasks else 1

    def push(self, tasks: Tuple[int, ...], params: Dict[str, AdapterParams]) -> None:
        self._stack.append((self.tasks, self.params))
        self.tasks, self.params = tasks, params

    def pop(self) -> None:
        if self._stack:
            self.tasks, self.params = self._stack.pop()

    @contextmanager
    def using(self, tasks: Sequence[int], params: Optional[Dict[str, AdapterParams]] = None) -> Iterator[None]:
        """Run the block inside with the weights ``params`` (or those the sites generate) of ``tasks``."""
        self.push(tuple(tasks), {} if params is None else dict(params))
        try:
            yield
        finally:
            self.pop()

    def __deepcopy__(self, memo):
        return AdapterCall()

    def __reduce__(self):  # pickled empty
        return AdapterCall, ()


class AdapterSite(nn.Module):
    """Base of the modules under ``adapters.<site>``: each adds the adapter branch to its sub-layer's
    output (``h + branch(h)``) with the weights of the call's task(s), generated at the site's first use in
    the call. Generating inside the backbone's forward (not in a hook around it) keeps a compiled backbone
    one graph, and lets a checkpointed block regenerate them with autograd on in its recompute."""

    def bind(self, call: AdapterCall, site: str) -> None:
        vars(self)['call'] = call  # not a submodule / buffer: plain shared state
        self.site = site

    def params_for(self, model: nn.Module, index: Tensor) -> AdapterParams:
        """The parameters of this adapter for the tasks ``index (G,)`` (leading dimension G)."""
        raise NotImplementedError

    def hook(self, module: nn.Module, args, output: Tensor) -> Tensor:
        """Forward hook on the sub-layer: ``(G*B', ..., d)`` -> the same plus the branch of each group."""
        call = self.call
        if call.tasks is None:
            raise RuntimeError(f'adapter site {self.site!r} ran outside a call of its backbone: its task-conditioned '
                               f'weights are generated per backbone call; call the backbone (with task=...)')
        p = call.params.get(self.site)
        if p is None:
            p = call.params[self.site] = self.params_for(call.model, torch.tensor(call.tasks, device=output.device))
        d = output.shape[-1]
        branch = adapter_branch(output.reshape(call.groups, -1, d), p)
        return output + branch.reshape(output.shape)


class HyperSite(AdapterHyperNetwork, AdapterSite):
    """One adapter of Hyperformer / Polyhistor: its layer-wise hyper-networks (:class:`AdapterHyperNetwork`)."""

    def params_for(self, model: nn.Module, index: Tensor) -> AdapterParams:
        return self(model.task_embeds.index_select(0, index))


class LiteSite(LiteAdapterSite, AdapterSite):
    """One adapter of Polyhistor-Lite: layer embeddings, Scaling Kernels, per-task vectors."""

    def params_for(self, model: nn.Module, index: Tensor) -> AdapterParams:
        return self(model.task_embeds.index_select(0, index), index, model.template_hypernet)


class PlainSite(AdapterSite):
    """One adapter with stored per-task weights (no hyper-network): ``w_down (T, d, n)``, ``b_down (T, n)``,
    ``w_up (T, n, d)``, ``b_up (T, d)``, ``gamma (T, d)``, ``beta (T, d)``, zero at initialisation (the
    branch is zero: identity)."""

    def __init__(self, num_tasks: int, d: int, n: int):
        super().__init__()
        self.d, self.n = d, n
        for name, shape in zip(AdapterParams._fields, [(d, n), (n,), (n, d), (d,), (d,), (d,)]):
            self.register_parameter(name, nn.Parameter(torch.zeros(num_tasks, *shape)))

    def params_for(self, model: nn.Module, index: Tensor) -> AdapterParams:
        return AdapterParams(*(getattr(self, f).index_select(0, index) for f in AdapterParams._fields))

    def extra_repr(self) -> str:
        return f'num_tasks={self.w_down.shape[0]}, d={self.d}, n={self.n}'


class TaskConditionedAdapters(TaskWiseMethod):
    """Base of :class:`Hyperformer`, :class:`Polyhistor`, :class:`PolyhistorLite` (see the module docstring).

    Adds to the backbone (keys of the plain backbone unchanged): ``task_embeds`` ``(T, k)`` (Lite:
    ``(T, k/2)``), ``adapters.<site>`` (one per block and position) and, for Lite,
    ``template_hypernet``.

    Args:
        tasks: names of the ``T`` tasks (one task embedding each); or ``num_tasks``.
        reduction_ratio: rho = d / n (Lite: of the template width d1). ``None``: the method's default.
        rank: r, an int or ``'n/q'`` (not for Hyperformer). ``None``: default.
        embed_dims_task: k, the task-embedding size (Lite: task and layer embeddings of k/2 each).
        factorization: ``'joint'`` (eqs. 3/5 as written) or ``'per_projection'``; ``None``: default.
        positions: where adapters go in each block, a subset of ``('attn', 'ffn')``.
        batched: ``peft.forward_tasks`` runs all asked tasks as one pass of ``T*B`` images.
        train_backbone_norms: also train the backbone's LayerNorms (shared by the tasks).
        frozen_eval: keep frozen dropout / drop-path modules in eval mode during training.
    """

    mode = ''

    def __init__(self, tasks: Optional[Sequence[str]] = None, num_tasks: Optional[int] = None,
                 reduction_ratio: Optional[int] = None, rank: Union[int, str, None] = None,
                 embed_dims_task: Optional[int] = None, factorization: Optional[str] = None,
                 positions: Sequence[str] = POSITIONS, batched: bool = True,
                 train_backbone_norms: bool = True, frozen_eval: bool = True):
        super().__init__(num_tasks=num_tasks, tasks=tasks, frozen_eval=frozen_eval)
        name = type(self).__name__
        defaults = MODE_DEFAULTS[self.mode]
        bad_pos = [p for p in positions if p not in POSITIONS]
        if bad_pos or not positions:
            raise ValueError(f'{name}: positions must be a non-empty subset of {POSITIONS}, got {tuple(positions)!r}')
        if self.mode in ('hyperformer', 'task_adapters') and rank is not None:
            raise ValueError(f'{name}: {name} has full adapter weights; rank must be None')
        self.reduction_ratio = whole(
            name, 'reduction_ratio', defaults['reduction_ratio'] if reduction_ratio is None else reduction_ratio,
            'a whole number >= 1 dividing the adapter input sizes (n = d / rho), e.g. 1, 2, 4, 8, 16')
        self.rank = defaults['rank'] if rank is None else rank
        if self.rank is not None:
            resolve_rank(self.rank, 1)  # a malformed rank fails now
        k = whole(name, 'embed_dims_task', defaults['embed_dims_task'] if embed_dims_task is None else embed_dims_task,
                  'a whole number >= 2 (even for PolyhistorLite), e.g. 64')
        if k < 2 or (self.mode == 'polyhistor_lite' and k % 2):
            need = ' and even for Lite ([task; layer] embeddings of k/2 each)' if self.mode == 'polyhistor_lite' else ''
            raise ValueError(f'{name}: embed_dims_task (k) must be >= 2{need}, got {k}')
        self.embed_dims_task = k
        self.factorization = defaults['factorization'] if factorization is None else factorization
        self.positions = tuple(p for p in POSITIONS if p in positions)
        self.batched = batched
        self.train_backbone_norms = train_backbone_norms
        self.call = AdapterCall()
        self.sites: List[str] = []

    # -- building ------------------------------------------------------------------------------------
    def bottleneck(self, d: int, widths: Sequence[int]) -> int:
        rho = self.reduction_ratio
        if d % rho:
            raise ValueError(f'{type(self).__name__}: reduction_ratio (rho={rho}) must divide the adapter input '
                             f'size d={d} (n = d / rho); choose one dividing every block width {tuple(widths)}')
        return d // rho

    def _make_sites(self, peft, blocks) -> nn.ModuleDict:
        raise NotImplementedError

    def _shared(self, blocks) -> Dict[str, Union[nn.Module, nn.Parameter]]:
        """What the sites share, added at the backbone's root: the task embeddings ``V_t`` ``(T, k)``."""
        return {'task_embeds': nn.Parameter(torch.randn(self.num_tasks, self.embed_dims_task))}

    def _inject(self, peft) -> None:
        blocks = find_blocks(peft.model)
        # created in this order (shared, then the sites in block order), so a seed gives the same weights
        # as ever; registered as task embeddings, sites, template: the keys PolyhistorSwin always had
        shared = self._shared(blocks)
        sites = self._make_sites(peft, blocks)
        for name in [n for n in shared if n == 'task_embeds']:
            peft.add('', name, shared.pop(name))
        peft.add('', 'adapters', sites)
        for name, value in shared.items():
            peft.add('', name, value)
        for blk in blocks:
            for pos in self.positions:
                site = sites[site_name(blk.name, pos)]
                site.bind(self.call, site_name(blk.name, pos))
                peft.hook(blk.proj if pos == 'attn' else blk.mlp, site.hook)
        self.sites = list(sites.keys())
        # open each call for its task(s), after the task keyword is taken (that pre-hook is prepended later)
        peft.hook('', self.begin, pre=True)
        peft.hook('', self.release, always_call=True)
        sites.register_load_state_dict_post_hook(_load_bump)  # runs on a load of the whole model too
        _watch_optimizer_steps()

    def init_weights(self, backbone: nn.Module) -> None:
        """Nothing: the sites are initialised when built, and no backbone initialiser touches them (they
        hold plain parameters, no ``nn.Linear`` / ``nn.LayerNorm``)."""

    def trainable_patterns(self, backbone: nn.Module) -> List[str]:
        patterns = exact_patterns(backbone.peft.injected)
        if self.train_backbone_norms:
            patterns += exact_patterns([n for n, m in backbone.named_modules() if isinstance(m, nn.LayerNorm)])
        return patterns

    # -- generation ---------------------------------------------------------------------------------
    def adapter_params(self, model: nn.Module, index: Tensor) -> Dict[str, AdapterParams]:
        """Every site's parameters for the tasks ``index (G,)``: ``{site: AdapterParams (G, ...)}``."""
        return {name: site.params_for(model, index) for name, site in model.adapters.items()}

    def begin(self, model: nn.Module, args) -> None:
        """Forward pre-hook of the backbone: open the call for its task(s). The sites generate their weights
        at first use; with autograd off they come from (and go to) the cache of the task(s)."""
        call = self.call
        tasks = tuple(call.batch_tasks) if call.batch_tasks is not None else (self.switch.index,)
        call.model = model
        if torch.is_grad_enabled():
            call.cache.clear()  # an optimizer step may follow
            params: Dict[str, AdapterParams] = {}
        else:
            ref = next(model.adapters.parameters())
            key = (tasks, _GENERATION[0], ref.device, ref.dtype)
            if key not in call.cache:
                call.cache = {k: v for k, v in call.cache.items() if k[1] == key[1]}  # older generations: stale
                call.cache[key] = {}
            params = call.cache[key]  # filled by the sites, reused by the next call of these tasks
        call.push(tasks, params)

    def release(self, model: nn.Module, args, output) -> None:
        self.call.pop()

    def clear_cache(self) -> None:
        """Forget the cached inference weights (needed only after editing parameters in place by hand)."""
        self.call.cache.clear()

    # -- with_cp: a checkpointed block regenerates the weights of its call's tasks ------------------
    def capture_call(self) -> Tuple[Any, List[Tensor]]:
        """``(state, tensors)`` a recompute needs: the running call's tasks (the sites regenerate the weights,
        with autograd, inside the recompute)."""
        return self.call.tasks, []

    @contextmanager
    def use_call(self, state: Any, tensors: Sequence[Tensor]) -> Iterator[None]:
        if state is None:
            yield
            return
        with self.call.using(state):
            yield

    # -- several tasks ------------------------------------------------------------------------------
    def forward_tasks(self, peft, x: Tensor, tasks: Sequence, batched: Optional[bool] = None, **kwargs) -> Dict:
        """``{task: backbone output}``: one pass of ``T*B`` images (batched) or one pass per task."""
        batched = self.batched if batched is None else batched
        if not batched or len(tasks) < 2:
            return {t: peft.model(x, task=t, **kwargs) for t in tasks}
        index = [self.switch.resolve(t) for t in tasks]
        if len(set(index)) != len(index):
            raise ValueError(f'{type(self).__name__}: tasks must be distinct, got {list(tasks)}')
        if peft.merged_task is not None:
            raise RuntimeError('forward_tasks with a merged task: unmerge() first')
        check = getattr(peft.model, 'check_input', None)
        if callable(check):  # name the user's shape, not the repeated one
            check(x)
        groups = len(tasks)
        xs = x.unsqueeze(0).expand(groups, *x.shape).reshape(groups * x.shape[0], *x.shape[1:])
        previous, self.call.batch_tasks = self.call.batch_tasks, index
        try:
            out = peft.model(xs, **kwargs)
        finally:
            self.call.batch_tasks = previous
        return dict(zip(tasks, _split_groups(out, groups)))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(tasks={self.switch.tasks or self.num_tasks}, '
                f'reduction_ratio={self.reduction_ratio}, rank={self.rank!r}, '
                f'embed_dims_task={self.embed_dims_task}, positions={self.positions}, batched={self.batched})')


def _load_bump(module: nn.Module, incompatible_keys) -> None:
    _bump()


def _split_groups(out, groups: int) -> List:
    """A backbone output over ``groups * B`` images -> ``groups`` outputs over ``B`` (tensors, and
    lists / tuples / dicts of them)."""
    if isinstance(out, Tensor):
        return list(out.chunk(groups, dim=0))
    if isinstance(out, (list, tuple)):
        parts = [_split_groups(o, groups) for o in out]
        return [type(out)(p[g] for p in parts) for g in range(groups)]
    if isinstance(out, dict):
        parts = {k: _split_groups(v, groups) for k, v in out.items()}
        return [type(out)((k, v[g]) for k, v in parts.items()) for g in range(groups)]
    raise TypeError(f'cannot split a backbone output of type {type(out).__name__} into task groups')


@PEFT_METHODS.register_module()
class Hyperformer(TaskConditionedAdapters):
    """Hyperformer (Mahabadi et al., 2021; Polyhistor eq. 2): a hyper-network per adapter generates its
    full weight from the task embedding. ``k * 2dn`` parameters per adapter."""

    mode = 'hyperformer'

    def _make_sites(self, peft, blocks) -> nn.ModuleDict:
        widths = [b.dims for b in blocks]
        return nn.ModuleDict({
            site_name(b.name, pos): HyperSite(self.embed_dims_task, b.dims, self.bottleneck(b.dims, widths), None)
            for b in blocks for pos in self.positions})


@PEFT_METHODS.register_module()
class Polyhistor(TaskConditionedAdapters):
    """Polyhistor (eq. 3): decomposed hyper-networks per adapter emit rank-``r`` factors of its weight."""

    mode = 'polyhistor'

    def _make_sites(self, peft, blocks) -> nn.ModuleDict:
        widths = [b.dims for b in blocks]
        sites = nn.ModuleDict()
        for b in blocks:
            n = self.bottleneck(b.dims, widths)
            for pos in self.positions:
                sites[site_name(b.name, pos)] = HyperSite(self.embed_dims_task, b.dims, n,
                                                          resolve_rank(self.rank, n), self.factorization)
        return sites


@PEFT_METHODS.register_module()
class PolyhistorLite(TaskConditionedAdapters):
    """Polyhistor-Lite (eqs. 4-6): shared template hyper-networks + layer-wise Scaling Kernels.

    Args:
        scales: s per block, in block order, or per distinct width in increasing order (Swin: one per
            stage, e.g. ``(1, 2, 4, 8)``); ``None``: ``d / d1`` of each block.
        template_dims: d1, the Template Kernel's input size; ``None``: the first block's width. Every
            block width must be ``d1 * s``.
        **kwargs: see :class:`TaskConditionedAdapters`.
    """

    mode = 'polyhistor_lite'

    def __init__(self, scales: Optional[Sequence[int]] = None, template_dims: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.scales = None if scales is None else tuple(
            whole(name, 'scales', s, 'whole numbers with d1 * s = width per block, e.g. (1, 2, 4, 8)') for s in scales)
        self.template_dims = None if template_dims is None else whole(
            name, 'template_dims', template_dims, 'a whole number dividing every block width')

    def _scales(self, widths: Sequence[int], d1: int) -> List[int]:
        name = type(self).__name__
        distinct = sorted(set(widths))
        if self.scales is None:
            bad = [w for w in distinct if w % d1]
            if bad:
                from functools import reduce
                from math import gcd
                raise ValueError(f'{name}: block widths {bad} are not multiples of the template width d1={d1} '
                                 f'(widths {tuple(distinct)}); set template_dims to a common divisor, e.g. '
                                 f'template_dims={reduce(gcd, distinct)}')
            return [w // d1 for w in widths]
        if len(self.scales) == len(widths):
            scales = list(self.scales)
        elif len(self.scales) == len(distinct):
            scales = [self.scales[distinct.index(w)] for w in widths]
        else:
            raise ValueError(f'{name}: scales {self.scales} give neither one s per block ({len(widths)}) nor one per '
                             f'distinct width {tuple(distinct)}')
        if any(d1 * s != w for s, w in zip(scales, widths)):
            raise ValueError(f'{name}: scales {self.scales} do not map the template width d1={d1} to the block '
                             f'widths {tuple(distinct)} (need d1 * s = width)')
        return scales

    def _geometry(self, blocks) -> Tuple[int, int, List[int]]:
        """``(d1, n1, s per block)``."""
        widths = [b.dims for b in blocks]
        d1 = self.template_dims or widths[0]
        scales = self._scales(widths, d1)
        self.resolved_scales = tuple(dict.fromkeys(scales))  # one s per distinct width (per Swin stage)
        return d1, self.bottleneck(d1, [d1]), scales

    def _shared(self, blocks) -> Dict[str, Union[nn.Module, nn.Parameter]]:
        """Task embeddings ``V~_t`` ``(T, k/2)`` and the Template Kernels' hyper-network pair (eq. 5)."""
        d1, n1, _ = self._geometry(blocks)
        k = self.embed_dims_task
        embeds = nn.Parameter(torch.randn(self.num_tasks, k // 2))
        template = DecomposedHyperNetwork(k, d1, n1, resolve_rank(self.rank, n1), self.factorization)
        return {'task_embeds': embeds, 'template_hypernet': template}

    def _make_sites(self, peft, blocks) -> nn.ModuleDict:
        d1, n1, scales = self._geometry(blocks)
        return nn.ModuleDict({site_name(b.name, pos): LiteSite(self.num_tasks, self.embed_dims_task, d1, n1, s)
                              for b, s in zip(blocks, scales) for pos in self.positions})


@PEFT_METHODS.register_module()
class TaskAdapters(TaskConditionedAdapters):
    """Plain per-task adapters at the sites of the task-conditioned methods: what
    :func:`export_task_adapters` turns a trained Hyperformer / Polyhistor / PolyhistorLite into (its
    generated weights stored per task), a model with no hyper-network and the same outputs. Trained from
    scratch it is the task-wise adapter of Hyperformer's form (zero-initialised: the identity at start).

    Args:
        reduction_ratio: rho = d / n at every site (for an exported Lite, the template's rho: its sites have
            ``n = n1 s = d / rho``).
        **kwargs: ``tasks`` / ``num_tasks``, ``positions``, ``batched``, ``train_backbone_norms``,
            ``frozen_eval`` (see :class:`TaskConditionedAdapters`).
    """

    mode = 'task_adapters'

    def _make_sites(self, peft, blocks) -> nn.ModuleDict:
        widths = [b.dims for b in blocks]
        return nn.ModuleDict({site_name(b.name, pos): PlainSite(self.num_tasks, b.dims, self.bottleneck(b.dims, widths))
                              for b in blocks for pos in self.positions})

    def _shared(self, blocks) -> Dict[str, Union[nn.Module, nn.Parameter]]:
        return {}


@torch.no_grad()
def export_task_adapters(backbone: nn.Module) -> Tuple[dict, Dict[str, Tensor]]:
    """A trained task-conditioned backbone as plain per-task adapters.

    Returns:
        ``(method_cfg, state)``: the :class:`TaskAdapters` config that replaces the backbone's method, and
        the backbone's state dict for it: the frozen and shared tensors as they are, the hyper-networks and
        task embeddings replaced by ``adapters.<site>.{w_down, b_down, w_up, b_up, gamma, beta}``, the
        weights they generate for every task.
    """
    peft = vars(backbone).get('peft')
    method = getattr(peft, 'method', None)
    if not isinstance(method, TaskConditionedAdapters) or isinstance(method, TaskAdapters):
        raise ValueError(f'{type(backbone).__name__} holds no hyper-network method to export (its PEFT method is '
                         f'{method!r}); export_task_adapters takes Hyperformer, Polyhistor or PolyhistorLite')
    index = torch.arange(method.num_tasks, device=next(backbone.adapters.parameters()).device)
    params = method.adapter_params(backbone, index)
    generated = {n for n in peft.injected}
    state = {k: v for k, v in backbone.state_dict().items()
             if not any(k == g or k.startswith(g + '.') for g in generated)}
    for site, p in params.items():
        for field, t in zip(AdapterParams._fields, p):
            state[f'adapters.{site}.{field}'] = t.detach().clone()
    cfg = dict(type='TaskAdapters', reduction_ratio=method.reduction_ratio, positions=list(method.positions),
               batched=method.batched, train_backbone_norms=method.train_backbone_norms,
               frozen_eval=method.frozen_eval)
    if method.switch.tasks is not None:
        cfg['tasks'] = list(method.switch.tasks)
    else:
        cfg['num_tasks'] = method.num_tasks
    return cfg, state
