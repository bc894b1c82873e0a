"""DeltaCheckpointHook: checkpoints that hold only what training changed."""
import os.path as osp
from typing import Dict, Optional

import torch
from mmengine.dist import barrier, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner.checkpoint import save_checkpoint

from ..registry import HOOKS
from ..utils.checkpoint_io import state_dict_of
from ..utils.delta import DELTA_KEY, file_tensor_hash, load_base_file, make_delta_meta


@HOOKS.register_module()
class DeltaCheckpointHook(Hook):
    """Make every checkpoint the runner saves a delta: trainable parameters + changed buffers.

    Add it next to the usual ``CheckpointHook`` (which still decides when and where to save)::

        custom_hooks = [dict(type='DeltaCheckpointHook')]

    A delta keeps optimizer, scheduler and message-hub state, so ``resume=True`` works, and records
    the base weights it applies to by path and by a hash of their tensors (see
    :mod:`mmpeft.utils.delta`). Any mmengine load of a delta (``load_from``, ``resume``,
    ``tools/test.py``) expands it to base + delta after checking that the base is the one it was
    trained on (a base rewritten since, e.g. by another training in the work_dir, is refused);
    ``tools/model_converters/merge_delta.py`` writes the full checkpoint.

    The base weights: with ``base=None`` the hook writes the model's full state dict as it stands when
    training starts (pretrained weights loaded, nothing trained yet) to ``work_dir/base_filename``
    once; later runs in the same ``work_dir`` (resumes) check that the frozen weights still equal that
    file. With ``base=PATH`` (a full checkpoint of this model) nothing is written and the frozen
    weights are checked against it when training starts.

    Args:
        base: path of an existing full checkpoint of this model to use as the base, or None.
        base_filename: file name of the written base inside ``work_dir`` when ``base`` is None.
        check_base: compare the frozen weights with the base when training starts.
    """

    priority = 'LOW'  # after hooks that add their own state (e.g. EMA) to the checkpoint

    def __init__(self, base: Optional[str] = None, base_filename: str = 'base_weights.pth',
                 check_base: bool = True):
        self.base = base
        self.base_filename = base_filename
        self.check_base = check_base
        self._base_path: Optional[str] = None
        self._base_hash: Optional[str] = None
        self._base_buffers: Dict[str, torch.Tensor] = {}
        self._trainable: list = []
        self._frozen_shapes: Dict[str, list] = {}

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def before_train(self, runner) -> None:
        model = self._model(runner)
        sd = model.state_dict()
        self._trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        if not self._trainable:
            raise RuntimeError('DeltaCheckpointHook: the model has no trainable parameters')
        trainable = set(self._trainable)
        param_keys = {n for n, _ in model.named_parameters()}
        self._frozen_shapes = {k: list(v.shape) for k, v in sd.items() if k not in trainable}
        if self.base is not None:
            self._base_path = osp.abspath(self.base)
            if not osp.isfile(self._base_path):
                raise FileNotFoundError(f'DeltaCheckpointHook: base weights file {self.base} does not exist')
        else:
            self._base_path = osp.abspath(osp.join(runner.work_dir, self.base_filename))
            if is_main_process() and not osp.isfile(self._base_path):
                save_checkpoint(dict(meta=dict(mmpeft_base=True), state_dict={k: v.detach().cpu()
                                                                             for k, v in sd.items()}),
                                self._base_path)
                runner.logger.info(f'DeltaCheckpointHook: base weights written to {self._base_path}')
            barrier()
        base_sd = state_dict_of(load_base_file(self._base_path), f'base weights {self._base_path}')
        self._base_hash = file_tensor_hash(self._base_path, base_sd)
        if self.check_base:
            self._check_frozen_equal(sd, base_sd, trainable, param_keys)
        self._base_buffers = {k: base_sd[k] for k in sd if k not in param_keys and k in base_sd}

    def _check_frozen_equal(self, sd, base_sd, trainable, param_keys) -> None:
        missing = [k for k in sd if k not in trainable and k not in base_sd]
        if missing:
            raise KeyError(f'base weights {self._base_path} lack keys of this model: {missing[:10]}'
                           + (f' ... and {len(missing) - 10} more' if len(missing) > 10 else ''))
        differ = [k for k in sd if k in param_keys and k not in trainable
                  and (base_sd[k].shape != sd[k].shape or not torch.equal(base_sd[k], sd[k].cpu()))]
        if differ:
            raise ValueError(f'the frozen weights of the model differ from base weights {self._base_path} '
                             f'(e.g. {differ[:5]}): a delta would not reproduce this model. Use a fresh '
                             f'work_dir or pass base= the checkpoint these weights came from')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        sd = checkpoint['state_dict']
        trainable = set(self._trainable)
        buffers = [k for k, v in sd.items() if k not in trainable and k in self._base_buffers
                   and not (v.shape == self._base_buffers[k].shape and torch.equal(v, self._base_buffers[k]))]
        # buffers absent from the base (e.g. created lazily) are kept too
        buffers += [k for k in sd if k not in trainable and k not in self._frozen_shapes]
        keep = set(self._trainable) | set(buffers)
        checkpoint['state_dict'] = type(sd)((k, v) for k, v in sd.items() if k in keep)
        frozen = {k: s for k, s in self._frozen_shapes.items() if k not in keep}
        checkpoint['meta'][DELTA_KEY] = make_delta_meta(
            self._base_path, frozen, self._trainable, buffers, base_hash=self._base_hash)
