"""HST's Hierarchical Side Network (HSN, paper sections 3.1 and 3.4).

Four stages at strides 4, 8, 16, 32 of the (padded) image, widths ``d_j`` (``embed_dims``). Stage
``j`` holds as many Side blocks as ViT layers feed it (ViT-B: 3, 3, 3, 3 fed by layers 0-2, 3-5,
6-8, 9-11; ViT-L: 6 each), and Side block ``i`` takes ViT layer ``i``'s two T-Bridge branches:

    F^_hsn^i   = F_hsn^i + CrossAttention(LN(F_hsn^i), F_mg^i)            (eq. 4, Meta-Global injection)
    F_hsn^i+1  = X + FFN(LN(X)),   X = F^_hsn^i + F_fg^i                  (eq. 5, Fine-Grained injection)

The cross-attention's queries are the ``L = H_j W_j`` side tokens and its keys / values the
``N + 1`` (= 2) Meta-Global tokens, so it costs ``O(2 L d)`` (eq. 3). The implementation makes that
literal: the query / output projections are folded into the two key / value tokens per image, so no
``L x d x d`` product is left in the attention (:class:`MetaGlobalCrossAttention`).

Inference speed (``eval()`` without autograd): in-place residual additions, channels-last maps (the
token view of a stage's map and the map view of its tokens copy nothing) and, on CPU, oneDNN's fused
linear + bias + GELU / + residual for the FFN and the bridge (:func:`fused_linear`; set
``USE_FUSED_CPU_OPS = False`` to compare). All of it gives the standard computation's values up to
float rounding (``tests/test_backbones/test_hst_vit.py`` compares with a plain re-implementation).

Details the paper leaves open, chosen so that the trainable backbone parameters (side network +
bridge + meta tokens + ViT LayerNorms) come to 0.764M for ViT-B + ``[32, 48, 64, 72]`` (paper:
0.78M with a classifier head) and 10.40M for ViT-B + ``[64, 128, 256, 384]`` (whole detectors and
segmentors then match Tables 4 and 5 to within 0.1M, see ``HSTViT``):

* **stem** (image -> stride 4): ``conv3x3/s2 (3 -> d_1/2) - LN - GELU - conv3x3/s2 (d_1/2 -> d_1) - LN``
  (``stem_channels`` sets the hidden width);
* **downsampling** before stages 2-4: an overlapping patch embedding, ``conv3x3/s2 (d_j-1 -> d_j) - LN``;
* **Side block**: pre-norm, ``q`` / ``k`` / ``v`` / output projections with bias, FFN
  ``Linear(d, 4d) - GELU - Linear(4d, d)`` (``mlp_ratio=4``), optional stochastic depth on both
  residual branches; no norm on the Meta-Global key / value tokens (``kv_norm=True`` adds one);
* **stage end**: ``LN`` over channels; the normed map is both the stage's output and the next
  stage's input.
* heads: ``d_j // 32`` by default (head width 32), which gives Table 1's ``[2, 4, 8, 12]``.

All norms are LayerNorms, so nothing depends on the batch (batch size 1 trains as any other).
"""
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, Mlp, trunc_normal_

# oneDNN's fused linear (the op PyTorch's compiler uses on CPU); None: not probed yet
_FUSED_LINEAR_OK: Optional[bool] = None
#: set to False to run the side network's inference with plain PyTorch ops only
USE_FUSED_CPU_OPS = True


def _fused_linear_available() -> bool:
    global _FUSED_LINEAR_OK
    if _FUSED_LINEAR_OK is None:
        ok = False
        try:
            op = torch.ops.mkldnn._linear_pointwise
            if torch.backends.mkldnn.is_available():
                g = torch.Generator().manual_seed(0)
                x, r = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 4, generator=g)
                w1, b1 = torch.randn(16, 8, generator=g), torch.randn(16, generator=g)
                w2, b2 = torch.randn(4, 16, generator=g), torch.randn(4, generator=g)
                with torch.no_grad():
                    lin = op(x, w1, b1, 'none', [], '')
                    hid = op(x, w1, b1, 'gelu', [], 'none')
                    out = op.binary(hid, r, w2, b2, 'add')
                    want_lin = F.linear(x, w1, b1)
                    want = F.linear(F.gelu(want_lin), w2, b2) + r
                ok = all(torch.allclose(a, b, rtol=1e-5, atol=1e-5)
                         for a, b in ((lin, want_lin), (hid, F.gelu(want_lin)), (out, want)))
        except (AttributeError, RuntimeError):
            ok = False
        _FUSED_LINEAR_OK = ok
    return _FUSED_LINEAR_OK


def _tracing() -> bool:
    """Exporting / compiling: keep to standard ops there."""
    compiler = getattr(torch, 'compiler', None)
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or bool(compiler is not None and compiler.is_compiling()))


def fused_linear(x: torch.Tensor, linear: nn.Linear, post: str,
                 other: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """``gelu(linear(x))`` (``post='gelu'``), ``linear(x) + other`` (``post='add'``) or ``linear(x)``
    (``post='none'``: the bias written by the product, not copied in first) as one oneDNN call, for
    inference of float32 CPU tensors; ``None`` where that does not apply (the caller then uses plain
    ops)."""
    if not (USE_FUSED_CPU_OPS and x.device.type == 'cpu' and x.dtype == torch.float32
            and linear.weight.dtype == torch.float32 and linear.bias is not None
            and not torch.is_grad_enabled() and not _tracing() and _fused_linear_available()):
        return None
    x = x.contiguous()
    if post in ('gelu', 'none'):
        return torch.ops.mkldnn._linear_pointwise(x, linear.weight, linear.bias, post, [],
                                                  'none' if post == 'gelu' else '')
    return torch.ops.mkldnn._linear_pointwise.binary(x, other.contiguous(), linear.weight,
                                                      linear.bias, 'add')


class ConvStem(nn.Module):
    """Image ``(B, C_in, H, W)`` -> ``(B, d_1, H/4, W/4)`` with two stride-2 3x3 convolutions."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: Optional[int] = None):
        super().__init__()
        hidden = hidden_channels or max(out_channels // 2, 1)
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, stride=2, padding=1)
        self.norm1 = LayerNorm2d(hidden)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(hidden, out_channels, 3, stride=2, padding=1)
        self.norm2 = LayerNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class OverlapPatchEmbed(nn.Module):
    """``(B, d_in, H, W)`` -> ``(B, d_out, H/2, W/2)``: a 3x3 stride-2 convolution and a LayerNorm."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.norm = LayerNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class MetaGlobalCrossAttention(nn.Module):
    """Multi-head cross-attention of ``L`` side tokens (queries) on ``M`` Meta-Global tokens (eq. 3).

    Shapes: ``x`` ``(B, L, d)``, ``context`` ``(B, M, d)`` -> ``(B, L, d)``.

    The parameters are those of a standard attention (``q``, ``kv``, ``proj``, scale ``(d/h)^-0.5``),
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
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
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
        kv = self.kv(self.kv_norm(context))
        k = kv[..., :d].reshape(b, m, h, dh) * self.scale
        v = kv[..., d:].reshape(b, m, h, dh)
        wq = self.q.weight.reshape(h, dh, d)
        wp = self.proj.weight.reshape(d, h, dh)
        bq = None if self.q.bias is None else self.q.bias.reshape(h, dh)
        if m == 2:
            dk = k[:, 0] - k[:, 1]                                   # (B, h, dh)
            w = torch.einsum('hed,bhe->bdh', wq, dk)
            bias = None if bq is None else torch.einsum('he,bhe->bh', bq, dk).unsqueeze(1)
            u = torch.einsum('ohe,bhe->bho', wp, v[:, 0] - v[:, 1])
            c = F.linear(kv[:, 1:, d:], self.proj.weight, self.proj.bias)
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

    def add_to_(self, out: torch.Tensor, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``out += forward(x, context)`` in place (inference: ``out`` must be a fresh tensor)."""
        w, bias, u, c = self.folded(context)
        a = self._weights(x, w, bias, context.shape[1])
        # the constant term rides along as a weight-1 row of u: one product, no extra pass over out
        a = F.pad(a, (0, 1), value=1.0)
        return out.baddbmm_(a, torch.cat([u, c], dim=1))


class SideBlock(nn.Module):
    """One Side block: Meta-Global injection (eq. 4), Fine-Grained injection and FFN (eq. 5).

    Shapes: ``x`` and ``fg`` ``(B, L, d)``, ``mg`` ``(B, M, d)``; either branch may be ``None``
    (ablations), in which case its step is skipped.

    In inference (``eval()`` and no autograd) the residual additions are done in place on fresh
    tensors and, on CPU with oneDNN, the FFN runs as two fused products (bias + GELU, bias +
    residual, see :func:`fused_linear`); training uses plain autograd-friendly ops. Both give
    the same values up to float rounding.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 qkv_bias: bool = True, kv_norm: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MetaGlobalCrossAttention(dim, num_heads, qkv_bias=qkv_bias, kv_norm=kv_norm)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        # the fused FFN computes exact (erf) GELU, bias and no norm between the two linears
        self._fusable_mlp = (isinstance(self.mlp.act, nn.GELU) and self.mlp.act.approximate == 'none'
                             and isinstance(self.mlp.norm, nn.Identity))

    def forward(self, x: torch.Tensor, mg: Optional[torch.Tensor],
                fg: Optional[torch.Tensor]) -> torch.Tensor:
        if not self.training and not torch.is_grad_enabled():
            return self._forward_inference(x, mg, fg)
        if mg is not None:
            x = x + self.drop_path(self.attn(self.norm1(x), mg))
        if fg is not None:
            x = x + fg
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def _forward_inference(self, x: torch.Tensor, mg: Optional[torch.Tensor],
                           fg: Optional[torch.Tensor]) -> torch.Tensor:
        y = x + fg if fg is not None else (x.clone() if mg is not None else x)
        if mg is not None:
            self.attn.add_to_(y, self.norm1(x), mg)
        mlp = self.mlp
        z = self.norm2(y)
        hidden = fused_linear(z, mlp.fc1, 'gelu') if self._fusable_mlp else None
        if hidden is None:
            return y + mlp(z)
        out = fused_linear(hidden, mlp.fc2, 'add', y)
        return out if out is not None else y + mlp.fc2(hidden)


class HierarchicalSideNetwork(nn.Module):
    """Stem, four stages of Side blocks with downsampling between them, a norm at each stage end.

    Args:
        embed_dims: ``d_j`` per stage.
        num_heads: attention heads per stage (default ``d_j // 32``, at least 1).
        depths: Side blocks per stage (= ViT layers feeding it).
        mlp_ratio: FFN hidden width / ``d_j``.
        drop_path_rate: stochastic depth, rising linearly over all Side blocks to this value.
        in_channels: image channels.
        stem_channels: hidden width of the stem (default ``d_1 // 2``).
        kv_norm: LayerNorm on the Meta-Global tokens before the key / value projections.
    """

    strides = (4, 8, 16, 32)

    def __init__(self, embed_dims: Sequence[int], depths: Sequence[int],
                 num_heads: Optional[Sequence[int]] = None, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0, in_channels: int = 3,
                 stem_channels: Optional[int] = None, kv_norm: bool = False):
        super().__init__()
        embed_dims = [int(d) for d in embed_dims]
        if not 1 <= len(embed_dims) <= 4:
            raise ValueError(f'embed_dims {embed_dims}: 1 to 4 stages (strides 4, 8, 16, 32)')
        if len(depths) != len(embed_dims):
            raise ValueError(f'depths {list(depths)} and embed_dims {embed_dims} differ in length')
        if num_heads is None:
            num_heads = [max(d // 32, 1) for d in embed_dims]
        if len(num_heads) != len(embed_dims):
            raise ValueError(f'num_heads {list(num_heads)} and embed_dims {embed_dims} differ in length')
        self.embed_dims = embed_dims
        self.depths = [int(n) for n in depths]
        self.num_heads = list(num_heads)
        self.stem = ConvStem(in_channels, embed_dims[0], stem_channels)
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
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in embed_dims)
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
                tokens = blk(tokens, mg, fg)
                layer += 1
            x = self.norms[j](tokens).transpose(1, 2).unflatten(2, (h, w))
            outs.append(x)
        return outs
