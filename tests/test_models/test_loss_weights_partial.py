"""A partial loss_weights dict scales the named tasks; every other task keeps weight 1 (not 0)."""
import torch
from test_multitask_dense_model import batch, polyhistor_model


def test_partial_loss_weights_dict():
    data = batch()
    uniform = polyhistor_model()
    partial = polyhistor_model(loss_weights=dict(sal=3.0))
    partial.load_state_dict(uniform.state_dict())
    lu = uniform(**uniform.data_preprocessor(data, True), mode='loss')
    lp = partial(**partial.data_preprocessor(data, True), mode='loss')
    assert set(lp) == {'loss_semseg', 'loss_parts', 'loss_sal', 'loss_normals'}
    torch.testing.assert_close(lp['loss_sal'], 3.0 * lu['loss_sal'])
    for t in ('semseg', 'parts', 'normals'):
        assert lu[f'loss_{t}'].item() > 0
        torch.testing.assert_close(lp[f'loss_{t}'], lu[f'loss_{t}'])
