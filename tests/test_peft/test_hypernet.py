"""Hyper-networks of Hyperformer (eq. 2), Polyhistor (eq. 3) and Polyhistor-Lite (eqs. 4-6)."""
import pytest
import torch
import torch.nn.functional as F

from mmpeft.peft.hypernet import (
    AdapterHyperNetwork,
    AdapterParams,
    DecomposedHyperNetwork,
    HyperNetwork,
    LiteAdapterSite,
    VectorHyperNetwork,
    adapter_branch,
    kron_expand,
    split_adapter_weight,
)

K, D, N, R, T = 8, 12, 6, 2, 3


def test_hypernetwork_is_eq2_reshape_of_a_linear_map():
    torch.manual_seed(0)
    hyper = HyperNetwork(K, D, N)
    assert sum(p.numel() for p in hyper.parameters()) == K * 2 * D * N
    v = torch.randn(T, K)
    w = hyper(v)
    assert w.shape == (T, D, 2 * N)
    torch.testing.assert_close(w[1], (v[1] @ hyper.weight).reshape(D, 2 * N))
    # linear in the task embedding, no bias (eq. 2)
    torch.testing.assert_close(hyper(2 * v), 2 * w)
    torch.testing.assert_close(hyper(torch.zeros(1, K)), torch.zeros(1, D, 2 * N))


def test_decomposed_joint_is_rank_r_and_linear_in_rank():
    torch.manual_seed(0)
    hyper = DecomposedHyperNetwork(K, D, N, R, 'joint')
    assert sum(p.numel() for p in hyper.parameters()) == K * (D + 2 * N) * R  # eq. 3: k(d + 2n) r
    v = torch.randn(T, K)
    w = hyper(v)
    assert w.shape == (T, D, 2 * N)
    assert all(torch.linalg.matrix_rank(w[t]) == R for t in range(T))
    p = (v[0] @ hyper.p).reshape(D, R)
    q = (v[0] @ hyper.q).reshape(2 * N, R)
    torch.testing.assert_close(w[0], p @ q.T)  # W = Pi_p(V W^p) Pi_q(V W^q)^T


def test_decomposed_per_projection_gives_each_projection_rank_r():
    torch.manual_seed(0)
    hyper = DecomposedHyperNetwork(K, D, N, R, 'per_projection')
    assert sum(p.numel() for p in hyper.parameters()) == 2 * K * (D + N) * R
    w = hyper(torch.randn(T, K))
    w_down, w_up = split_adapter_weight(w, N)
    assert w_down.shape == (T, D, N) and w_up.shape == (T, N, D)
    for t in range(T):
        assert torch.linalg.matrix_rank(w_down[t]) == R and torch.linalg.matrix_rank(w_up[t]) == R
    # the two halves no longer share their column space (they would with 'joint')
    assert torch.linalg.matrix_rank(w[0]) == 2 * R


def test_generated_weights_have_fan_in_scale():
    torch.manual_seed(0)
    d, n, k = 256, 64, 64
    v = torch.randn(64, k)
    for hyper in (HyperNetwork(k, d, n), DecomposedHyperNetwork(k, d, n, 16)):
        std = hyper(v).std().item()
        assert 0.5 / d ** 0.5 < std < 2.0 / d ** 0.5, type(hyper).__name__


def test_kron_expand_matches_torch_kron():
    torch.manual_seed(0)
    s, a, b = 3, 4, 5
    templates, kernels = torch.randn(2, s, a, b), torch.randn(2, s, s, s)
    w = kron_expand(templates, kernels)
    assert w.shape == (2, a * s, b * s)
    for t in range(2):
        expected = sum(torch.kron(templates[t, i], kernels[t, i]) for i in range(s))  # eq. 4 / 6
        torch.testing.assert_close(w[t], expected)
    # the first n*s columns are the down-projection of the expanded adapter
    want = sum(torch.kron(templates[0, i, :, :2], kernels[0, i]) for i in range(s))
    torch.testing.assert_close(w[0, :, :2 * s], want)
    with pytest.raises(ValueError, match='scaling kernels'):
        kron_expand(templates, torch.randn(2, s, s, s + 1))


def _params(g, d, n, gen):
    return AdapterParams(torch.randn(g, d, n, generator=gen), torch.randn(g, n, generator=gen),
                         torch.randn(g, n, d, generator=gen), torch.randn(g, d, generator=gen),
                         torch.randn(g, d, generator=gen), torch.randn(g, d, generator=gen))


def test_adapter_branch_applies_each_groups_weights():
    gen = torch.Generator().manual_seed(0)
    p = _params(3, D, N, gen)
    x = torch.randn(3, 5, D, generator=gen)
    out = adapter_branch(x, p)
    for g in range(3):
        h = F.gelu(x[g] @ p.w_down[g] + p.b_down[g]) @ p.w_up[g] + p.b_up[g]
        expected = F.layer_norm(h, (D,)) * p.gamma[g] + p.beta[g]
        torch.testing.assert_close(out[g], expected)
    zero = p._replace(gamma=torch.zeros(3, D), beta=torch.zeros(3, D))
    assert adapter_branch(x, zero).abs().max() == 0
    with pytest.raises(ValueError, match='groups'):
        adapter_branch(x[:2], p)


def test_vector_hypernet_and_adapter_hypernet_shapes_and_zero_init():
    torch.manual_seed(0)
    vec = VectorHyperNetwork(K, D, N)
    assert vec.weight.numel() == K * (N + 3 * D) and vec.weight.abs().sum() == 0
    for r in (None, R):
        gen = AdapterHyperNetwork(K, D, N, r)
        p = gen(torch.randn(T, K))
        assert [tuple(t.shape) for t in p] == [(T, D, N), (T, N), (T, N, D), (T, D), (T, D), (T, D)]
        assert p.gamma.abs().sum() == 0 and p.beta.abs().sum() == 0  # identity at initialisation


def test_lite_site_is_eq5_eq6():
    torch.manual_seed(0)
    k, d, n, r, s = 8, 6, 3, 2, 2
    hyper = DecomposedHyperNetwork(k, d, n, r, 'joint')
    site = LiteAdapterSite(num_tasks=3, k=k, d=d, n=n, s=s)
    task_embeds = torch.randn(3, k // 2)
    index = torch.tensor([2, 0])
    p = site(task_embeds[index], index, hyper)
    assert p.w_down.shape == (2, d * s, n * s) and p.w_up.shape == (2, n * s, d * s)
    assert p.gamma.shape == (2, d * s) and p.b_down.shape == (2, n * s)
    # task 2, by hand: templates from [V_t; V_{l,i}], Kronecker with the task's scaling kernels
    w = sum(torch.kron(hyper(torch.cat([task_embeds[2], site.layer_embeds[i]])), site.scaling_kernels[2, i])
            for i in range(s))
    torch.testing.assert_close(p.w_down[0], w[:, :n * s])
    torch.testing.assert_close(p.w_up[0], w[:, n * s:].T)
    counts = {n_: q.numel() for n_, q in site.named_parameters()}
    assert counts == dict(layer_embeds=s * k // 2, scaling_kernels=3 * s ** 3, b_down=3 * n * s, b_up=3 * d * s,
                          gamma=3 * d * s, beta=3 * d * s)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='factorization'):
        DecomposedHyperNetwork(K, D, N, R, 'diagonal')
    with pytest.raises(ValueError, match='rank r=13'):
        DecomposedHyperNetwork(K, D, N, 13)
    with pytest.raises(ValueError, match='2n = 4'):
        split_adapter_weight(torch.zeros(D, 6), 2)
