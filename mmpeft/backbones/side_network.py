"""HST's Hierarchical Side Network (HSN, paper sections 3.1 and 3.4), as the authors released it.

Four stages at strides 4, 8, 16, 32 of the (padded) image, widths ``d_j`` (``embed_dims``). Stage
``j`` holds as many Side blocks as ViT layers feed it (ViT-B: 3, 3, 3, 3 fed by layers 0-2, 3-5,
6-8, 9-11; ViT-L: 6 each), and Side block ``i`` takes ViT layer ``i``'s two T-Bridge branches:

    F^_hsn^i   = F_hsn^i + CrossAttention(LN(F_hsn^i), F_mg^i)            (eq. 4, Meta-Global injection)
    F_hsn^i+1  = X + FFN(LN(X)),   X = F^_hsn^i + F_fg^i                  (eq. 5, Fine-Grained injection)

The cross-attention's queries are the ``L = H_j W_j`` side tokens and its keys / values the
``N + 1`` (= 2) Meta-Global tokens, so it costs ``O(2 L d)`` (eq. 3). The implementation makes that
literal: the query / output projections are folded into the two key / value tokens per image, so no
``L x d x d`` product is left in the attention (:class:`MetaGlobalCrossAttention`; arithmetic, the
same values as the standard attention up to float rounding).

The paper gives the structure, not the layers; they follow the authors' released model (``ViT_HSN``,
state-dict names in brackets; :mod:`mmpeft.backbones.hst_official_checkpoint` converts its files):

* **stem** (image -> stride 4, ``stem='conv_bn'``, [``m_patch_embed1``]):
  ``conv3x3/s2 (3 -> d_1, no bias) - BN - ReLU - conv2x2/s2 (d_1 -> d_1) - LN(eps 1e-5)``; the
  BatchNorm is ``norm_cfg`` (SyncBN under DDP in the dense configs). ``stem='conv_ln'`` is mmpeft's
  earlier reading of the paper's "convolutional stem" without BatchNorm, ``conv3x3/s2 (3 -> d_1/2) -
  LN - GELU - conv3x3/s2 (d_1/2 -> d_1) - LN`` (``stem_channels`` sets its hidden width), 64
  parameters more at ``d_1 = 32``;
* **downsampling** before stages 2-4 [``m_patch_embed2-4``]: ``conv3x3/s2 (d_j-1 -> d_j) - LN(eps 1e-5)``;
* **Side block** [``m_block{j}.{b}``]: pre-norm (LN eps 1e-6), separate ``q`` / ``k`` / ``v`` /
  output projections with bias, FFN ``Linear(d, 4d) - GELU - Linear(4d, d)`` (``mlp_ratio=4``),
  stochastic depth on both residual branches rising linearly over all Side blocks; no norm on the
  Meta-Global key / value tokens (``kv_norm=True`` adds one);
* **stage end** [``m_norm1-4``]: ``LN(eps 1e-6)`` over channels; the normed map is both the stage's
  output and the next stage's input;
* **heads** ``[2, 4, 8, 12]`` for every width (the classification dims ``[32, 48, 64, 72]`` too).

Conv weights are initialised normal(0, sqrt(2 / fan_out)), linears truncated normal(0.02), norms 1 / 0.
"""
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from timm.layers import DropPath, LayerNorm2d, Mlp, trunc_normal_

from .timm_vit import call_block

#: LayerNorm eps of the released model: Side blocks and stage ends / stem and downsampling embeddings
BLOCK_NORM_EPS = 1e-6
EMBED_NORM_EPS = 1e-5
STEMS = ('conv_bn', 'conv_ln')
DEFAULT_NUM_HEADS = (2, 4, 8, 12)

class ConvStem(nn.Module):
    """Image ``(B, C_in, H, W)`` -> ``(B, d_1, H/4, W/4)``, ``H``, ``W`` multiples of 4.

    ``stem='conv_bn'`` (released): ``conv1`` 3x3/s2 no bias -> ``norm1`` (``norm_cfg``, BN) -> ReLU ->
    ``conv2`` 2x2/s2 -> ``norm2`` LN(eps 1e-5). ``stem='conv_ln'``: ``conv1`` 3x3/s2 to ``hidden`` ->
    LN -> GELU -> ``conv2`` 3x3/s2 -> LN (eps 1e-6, timm's LayerNorm2d default).
    """

    def __init__(self, in_channels: int, out_channels: int, stem: str = 'conv_bn',
                 norm_cfg: Optional[dict] = None, hidden_channels: Optional[int] = None):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f'side-network stem {stem!r} is not one of {STEMS}')
        if stem == 'conv_bn':
            if hidden_channels is not None:
                raise ValueError("stem_channels applies to stem='conv_ln' only (the released stem keeps d_1)")
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
            self.norm1 = build_norm_layer(norm_cfg or dict(type='BN'), out_channels)[1]
            self.act = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 2, stride=2)
            self.norm2 = LayerNorm2d(out_channels, eps=EMBED_NORM_EPS)
        else:
            if norm_cfg is not None:
                raise ValueError("stem_norm_cfg applies to stem='conv_bn' only (the conv_ln stem has LayerNorms)")
            hidden = hidden_channels or max(out_channels // 2, 1)
            self.conv1 = nn.Conv2d(in_channels, hidden, 3, stride=2, padding=1)
            self.norm1 = LayerNorm2d(hidden)
            self.act = nn.GELU()
            self.conv2 = nn.Conv2d(hidden, out_channels, 3, stride=2, padding=1)
            self.norm2 = LayerNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class OverlapPatchEmbed(nn.Module):
    """``(B, d_in, H, W)`` -> ``(B, d_out, H/2, W/2)``: a 3x3 stride-2 convolution and LN(eps 1e-5)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.norm = LayerNorm2d(out_channels, eps=EMBED_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class MetaGlobalCrossAttention(nn.Module):
    """Multi-head cross-attention of ``L`` side tokens (queries) on ``M`` Meta-Global tokens (eq. 3).

    Shapes: ``x`` ``(B, L, d)``, ``context`` ``(B, M, d)`` -> ``(B, L, d)``.

    The parameters are those of a standard attention (``q``, ``k``, ``v``, ``proj``, scale ``(d/h)^-0.5``),
    but with only ``M`` (= 2) keys it is computed without the two ``L x d x d`` projections: per
    image, the query projection is folded into the keys and the output projection into the values
    (:meth:`folded`), so the ``L`` tokens see one ``(L, d) x (d, h M)`` product for the logits, a
    softmax over ``M`` (a sigmoid of the logit difference for ``M = 2``) and one
    ``(L, h M) x (h M, d)`` product for the output. The result equals the standard computation up to
    float rounding (the tests compare both).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, kv_norm: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'side-network width {dim} is not divisible by {num_heads} heads')
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv_norm = nn.LayerNorm(dim) if kv_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def folded(self, context: torch.Tensor):
        """``(w, b, u, c)`` for the ``M`` context tokens of each image.

        ``logits = x @ w + b`` (``(B, L, h M)``, head-major); ``out = softmax_M(logits) @ u + c``.
        For ``M = 2`` the first three are reduced to the logit difference of token 0 over token 1
        (``w`` ``(B, d, h)``, ``b`` ``(B, 1, h)``, ``u`` ``(B, h, d)``) and
        ``out = sigmoid(logits) @ u + c``, ``c = proj(v_1)`` ``(B, 1, d)``.
        """
        b, m, d = context.shape
        h = self.num_heads
        dh = d // h
        context = self.kv_norm(context)
        k = self.k(context).reshape(b, m, h, dh) * self.scale
        v_tokens = self.v(context)                                   # (B, M, d)
        v = v_tokens.reshape(b, m, h, dh)
        wq = self.q.weight.reshape(h, dh, d)
        wp = self.proj.weight.reshape(d, h, dh)
        bq = None if self.q.bias is None else self.q.bias.reshape(h, dh)
        if m == 2:
            dk = k[:, 0] - k[:, 1]                                   # (B, h, dh)
            w = torch.einsum('hed,bhe->bdh', wq, dk)
            bias = None if bq is None else torch.einsum('he,bhe->bh', bq, dk).unsqueeze(1)
            u = torch.einsum('ohe,bhe->bho', wp, v[:, 0] - v[:, 1])
            c = self.proj(v_tokens[:, 1:])
        else:
            w = torch.einsum('hed,bmhe->bdhm', wq, k).reshape(b, d, h * m)
            bias = None if bq is None else torch.einsum('he,bmhe->bhm', bq, k).reshape(b, 1, h * m)
            u = torch.einsum('ohe,bmhe->bhmo', wp, v).reshape(b, h * m, d)
            c = self.proj.bias.view(1, 1, d).expand(b, 1, d)
        return w, bias, u, c

    def _weights(self, x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor],
                 m: int) -> torch.Tensor:
        logits = torch.bmm(x, w) if bias is None else torch.baddbmm(bias, x, w)
        if m == 2:
            return torch.sigmoid(logits)
        b, n, _ = logits.shape
        return logits.view(b, n, -1, m).softmax(dim=-1).view(b, n, -1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        w, bias, u, c = self.folded(context)
        return torch.baddbmm(c, self._weights(x, w, bias, context.shape[1]), u)


class SideBlock(nn.Module):
    """One Side block: Meta-Global injection (eq. 4), Fine-Grained injection and FFN (eq. 5).

    Shapes: ``x`` and ``fg`` ``(B, L, d)``, ``mg`` ``(B, M, d)``; either branch may be ``None``
    (ablations), in which case its step is skipped. One path for training and inference (speed
    comes from ``torch.compile``, which fuses the elementwise steps).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 qkv_bias: bool = True, kv_norm: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = MetaGlobalCrossAttention(dim, num_heads, qkv_bias=qkv_bias, kv_norm=kv_norm)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, mg: Optional[torch.Tensor],
                fg: Optional[torch.Tensor]) -> torch.Tensor:
        if mg is not None:
            x = x + self.drop_path(self.attn(self.norm1(x), mg))
        if fg is not None:
            x = x + fg
        return x + self.drop_path(self.mlp(self.norm2(x)))


class HierarchicalSideNetwork(nn.Module):
    """Stem, four stages of Side blocks with downsampling between them, a norm at each stage end.

    Args:
        embed_dims: ``d_j`` per stage.
        num_heads: attention heads per stage (default ``[2, 4, 8, 12]``, the released model's, for
            every width).
        depths: Side blocks per stage (= ViT layers feeding it).
        mlp_ratio: FFN hidden width / ``d_j``.
        drop_path_rate: stochastic depth, rising linearly over all Side blocks to this value.
        in_channels: image channels.
        stem: ``'conv_bn'`` (released) or ``'conv_ln'`` (see the module docstring).
        norm_cfg: the ``conv_bn`` stem's norm (default ``dict(type='BN')``; ``SyncBN`` under DDP).
        stem_channels: hidden width of the ``conv_ln`` stem (default ``d_1 // 2``).
        kv_norm: LayerNorm on the Meta-Global tokens before the key / value projections.
        with_cp: activation checkpointing of every block while grad is enabled.
    """

    strides = (4, 8, 16, 32)

    def __init__(self, embed_dims: Sequence[int], depths: Sequence[int],
                 num_heads: Optional[Sequence[int]] = None, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0, in_channels: int = 3,
                 stem: str = 'conv_bn', norm_cfg: Optional[dict] = None,
                 stem_channels: Optional[int] = None, kv_norm: bool = False, with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        embed_dims = [int(d) for d in embed_dims]
        if not 1 <= len(embed_dims) <= 4:
            raise ValueError(f'embed_dims {embed_dims}: 1 to 4 stages (strides 4, 8, 16, 32)')
        if len(depths) != len(embed_dims):
            raise ValueError(f'depths {list(depths)} and embed_dims {embed_dims} differ in length')
        if num_heads is None:
            num_heads = DEFAULT_NUM_HEADS[:len(embed_dims)]
        if len(num_heads) != len(embed_dims):
            raise ValueError(f'num_heads {list(num_heads)} and embed_dims {embed_dims} differ in length')
        bad = [(d, h) for d, h in zip(embed_dims, num_heads) if d % h]
        if bad:
            raise ValueError(f'side-network widths {embed_dims} are not divisible by num_heads {list(num_heads)} '
                             f'(width, heads: {bad}); give num_heads that divide them')
        self.embed_dims = embed_dims
        self.depths = [int(n) for n in depths]
        self.num_heads = list(num_heads)
        self.stem = ConvStem(in_channels, embed_dims[0], stem, norm_cfg, stem_channels)
        self.downsamples = nn.ModuleList(
            OverlapPatchEmbed(embed_dims[j - 1], embed_dims[j]) for j in range(1, len(embed_dims)))
        total = sum(self.depths)
        # python floats, not torch.linspace: the network can then be built on the meta device
        rates = [drop_path_rate * k / max(total - 1, 1) for k in range(total)]
        self.stages = nn.ModuleList()
        k = 0
        for d, h, n in zip(embed_dims, self.num_heads, self.depths):
            self.stages.append(nn.ModuleList(
                SideBlock(d, h, mlp_ratio, rates[k + b], kv_norm=kv_norm) for b in range(n)))
            k += n
        self.norms = nn.ModuleList(nn.LayerNorm(d, eps=BLOCK_NORM_EPS) for d in embed_dims)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, LayerNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, img: torch.Tensor,
                inject: Callable[[int, Tuple[int, int]], Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]
                ) -> List[torch.Tensor]:
        """Side features of every stage.

        Args:
            img: ``(B, C, H, W)`` with ``H``, ``W`` multiples of 32 (the caller pads).
            inject: ``inject(i, (H_j, W_j))`` gives ViT layer ``i``'s T-Bridge branches
                ``(F_mg^i, F_fg^i)`` for Side block ``i`` (stage ``j``), e.g.
                ``lambda i, size: bridge(i, patch[i], register[i], size)``; it is called once per
                block, in order, so each layer's branches exist only while its block runs.

        Returns:
            Per stage ``j`` a ``(B, d_j, H / s_j, W / s_j)`` map, ``s_j`` = 4, 8, 16, 32 (in
            channels-last memory layout: the tokens ``(B, H_j W_j, d_j)`` viewed as a map, no copy).
        """
        # channels-last from the start: conv outputs are then already in token order (B, H, W, C),
        # so the token view of each stage's input and the map view of its output copy nothing
        x = self.stem(img.contiguous(memory_format=torch.channels_last))
        outs = []
        layer = 0
        for j, blocks in enumerate(self.stages):
            if j > 0:
                x = self.downsamples[j - 1](x)
            b, c, h, w = x.shape
            # (B, L, d_j), contiguous (a no-op for channels-last x): the linears on it are skinny
            # GEMMs, slow on strided input
            tokens = x.flatten(2).transpose(1, 2).contiguous()
            for blk in blocks:
                mg, fg = inject(layer, (h, w))
                tokens = call_block(blk, tokens, mg, fg, with_cp=self.with_cp)
                layer += 1
            x = self.norms[j](tokens).transpose(1, 2).unflatten(2, (h, w))
            outs.append(x)
        return outs
