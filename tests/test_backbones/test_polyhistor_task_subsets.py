"""A subset of tasks gives exactly what the same tasks give inside the all-tasks pass."""
import pytest
import torch

from mmpeft.backbones import PolyhistorSwin

TINY = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.0)
MODES = dict(
    hyperformer=dict(mode='hyperformer', reduction_ratio=4, embed_dims_task=8),
    polyhistor=dict(mode='polyhistor', reduction_ratio=4, rank=2, embed_dims_task=8),
    polyhistor_lite=dict(mode='polyhistor_lite', reduction_ratio=2, rank='n/4', embed_dims_task=8),
)


def _model(mode: str) -> PolyhistorSwin:
    torch.manual_seed(0)
    model = PolyhistorSwin(**MODES[mode], **TINY)
    model.init_weights()
    # every trainable tensor random (zero-initialised generated biases / norms would hide the task)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


@pytest.mark.parametrize('mode', list(MODES))
@pytest.mark.parametrize('subset', [['sal'], ['normals', 'parts']])
@pytest.mark.parametrize('batched', [False, True])
def test_subset_equals_same_tasks_in_all(mode, subset, batched):
    model = _model(mode)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full = model.peft.forward_tasks(x, batched=batched)
        part = model.peft.forward_tasks(x, subset, batched=batched)
    assert list(part) == subset
    for t in subset:
        for f, g in zip(part[t], full[t]):
            torch.testing.assert_close(f, g, rtol=0, atol=1e-5)
    # the tasks really differ (so equality above is not trivially true)
    assert (full['sal'][-1] - full['semseg'][-1]).abs().max() > 1e-3
