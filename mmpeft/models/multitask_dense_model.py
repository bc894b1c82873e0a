"""MultiTaskDenseModel: one backbone, one All-MLP decoder and one loss per dense task.

The PASCAL-Context benchmark of the Polyhistor paper: semantic segmentation (21 classes), human parts
(7), saliency (1 logit) and surface normals (3), with cross-entropy, cross-entropy, balanced binary
cross-entropy and L1 on L2-normalised normals.

The backbone is either task-conditioned: it holds a PEFT method with T > 1 task-wise or
task-generated modules (task-wise baselines, :class:`PolyhistorSwin`'s Hyperformer / Polyhistor /
Lite), called as ``backbone.peft.forward_tasks(x, tasks)`` -> ``{task: features}`` (one batched pass
or one pass per task, as the method runs); or shared: called once, its features feeding every head
(full fine-tuning, decoders only, single-task models).
"""
import logging
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.structures import PixelData
from torch import Tensor

from ..registry import MODELS
from ..structures import TASKS, MultiTaskDataSample

#: Outputs of each task's decoder (Sec. 5.1).
NUM_OUTPUTS = dict(semseg=21, parts=7, sal=1, normals=3)
#: Loss of each task (Sec. 5.1).
DEFAULT_LOSSES = dict(semseg=dict(type='DenseCrossEntropyLoss'), parts=dict(type='DenseCrossEntropyLoss'),
                      sal=dict(type='BalancedBCELoss'), normals=dict(type='NormalsL1Loss'))
#: Task loss weights. ``'uniform'`` is the default (appendix G: uniform weights do as well as task-wise
#: ones); ``'mti_net'`` are the task-wise weights of the prior work the paper follows (MTI-Net /
#: ASTMT on PASCAL-Context): semseg 1, parts 2, saliency 5, normals 10.
LOSS_WEIGHT_PRESETS = dict(uniform=dict(semseg=1.0, parts=1.0, sal=1.0, normals=1.0),
                           mti_net=dict(semseg=1.0, parts=2.0, sal=5.0, normals=10.0))
#: Ground-truth value of a pixel without label, per task (with ``allow_missing_gt`` a missing field
#: counts as all-invalid).
_INVALID = dict(semseg=255, parts=255, sal=255, normals=0.0)


def _check_tasks(tasks: Union[str, Sequence[str]], known: Sequence[str], what: str) -> tuple:
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise KeyError(f'{what}: unknown task(s) {unknown}; known tasks are {tuple(known)}')
    if not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f'{what}: tasks must be a non-empty list of distinct names, got {tasks}')
    return tasks


@MODELS.register_module()
class MultiTaskDenseModel(BaseModel):
    """Dense multi-task model (Polyhistor benchmark) in mmengine's ``loss`` / ``predict`` / ``tensor`` modes.

    Args:
        backbone: backbone config (``PolyhistorSwin``, or ``PEFTBackbone`` / any backbone returning a
            list of multi-scale features).
        decode_head: config of one task decoder (``AllMLPHead``); ``out_channels`` is set per task
            from ``num_outputs``.
        tasks: the tasks this model trains and predicts (a subset of ``TASKS``; one task gives a
            single-task model).
        num_outputs: per-task decoder outputs, overriding :data:`NUM_OUTPUTS`.
        losses: per-task loss configs, overriding :data:`DEFAULT_LOSSES`.
        loss_weights: ``'uniform'``, ``'mti_net'`` (see :data:`LOSS_WEIGHT_PRESETS`) or a dict task -> weight.
        test_tasks: tasks predicted in ``predict`` mode when none are asked (``None``: all ``tasks``).
        align_corners: of the upsampling of predictions to the input / original size.
        allow_missing_gt: a training image without the ground-truth field of one of ``tasks``
            (``gt_<task>``) counts as all-ignored for that task instead of being an error. Only for
            data mixing differently annotated images: otherwise a task missing from the dataset
            would train nothing and log a loss of 0.
        data_preprocessor: default :class:`MultiTaskDataPreProcessor` with ImageNet statistics.

    Module names make :func:`mmpeft.utils.count_params` split Encoder (``backbone``) and Heads
    (``decode_heads``) as the paper's tables do.
    """

    def __init__(self, backbone: dict, decode_head: dict, tasks: Sequence[str] = TASKS,
                 num_outputs: Optional[Dict[str, int]] = None, losses: Optional[Dict[str, dict]] = None,
                 loss_weights: Union[str, Dict[str, float]] = 'uniform', test_tasks: Optional[Sequence[str]] = None,
                 align_corners: bool = False, allow_missing_gt: bool = False,
                 data_preprocessor: Optional[dict] = None, init_cfg=None):
        if data_preprocessor is None:
            data_preprocessor = dict(type='MultiTaskDataPreProcessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.tasks = _check_tasks(tasks, TASKS, type(self).__name__)
        self.test_tasks = _check_tasks(test_tasks, self.tasks, 'test_tasks') if test_tasks else self.tasks
        self.align_corners = align_corners
        self.allow_missing_gt = allow_missing_gt
        outputs = dict(NUM_OUTPUTS, **(num_outputs or {}))
        loss_cfgs = dict(DEFAULT_LOSSES, **(losses or {}))
        if isinstance(loss_weights, str):
            if loss_weights not in LOSS_WEIGHT_PRESETS:
                raise ValueError(f'loss_weights preset must be one of {tuple(LOSS_WEIGHT_PRESETS)}, '
                                 f'got {loss_weights!r}')
            loss_weights = LOSS_WEIGHT_PRESETS[loss_weights]
        unknown = [t for t in loss_weights if t not in TASKS]
        if unknown:
            raise KeyError(f'loss_weights: unknown task(s) {unknown}; known tasks are {TASKS}')
        self.loss_weights = {t: float(loss_weights.get(t, 1.0)) for t in self.tasks}

        self.backbone = MODELS.build(backbone)
        peft = vars(self.backbone).get('peft')
        self.task_wise_peft = peft is not None and peft.num_tasks > 1
        self.task_conditioned = self.task_wise_peft
        if self.task_wise_peft and peft.switch.tasks is None:
            raise ValueError(f'the backbone\'s PEFT method {peft.method!r} holds {peft.num_tasks} task-wise sets '
                             f'without task names: give the method tasks={list(self.tasks)} (in the backbone '
                             f'config, instead of num_tasks)')
        if peft is not None and peft.switch.tasks is not None:  # a method built for named tasks
            known = peft.tasks
            missing = [t for t in self.tasks if t not in known]
            if missing:
                raise KeyError(f'the backbone has no task embedding / task-wise set for {missing} (its PEFT '
                               f'method was built for {known}): add them to the method\'s tasks')
        self.decode_heads = nn.ModuleDict(
            {t: MODELS.build(dict(decode_head, out_channels=outputs[t])) for t in self.tasks})
        self.losses = nn.ModuleDict({t: MODELS.build(loss_cfgs[t]) for t in self.tasks})
        self._check_head_channels()

    def _check_head_channels(self) -> None:
        """Compare the heads' ``in_channels`` with the backbone's features now, not in the first forward.

        The backbone runs once on a small zero image (eval mode, no grad; training flags restored, so
        no norm statistic moves). A backbone that cannot run on it is not checked here.
        """
        head = self.decode_heads[self.tasks[0]]
        expected = getattr(head, 'in_channels', None)
        if expected is None:
            return
        training = [(m, m.training) for m in self.backbone.modules()]
        self.backbone.eval()
        try:
            with torch.no_grad():
                x = torch.zeros(1, 3, 64, 64, device=next(self.backbone.parameters()).device)
                feats = self.extract_feats(x, self.tasks[:1])[self.tasks[0]]
            found = [f.shape[1] for f in feats]
        except Exception as e:  # noqa: BLE001  (e.g. a backbone with a fixed input size)
            print_log(f'{type(self).__name__}: could not probe the backbone\'s output channels '
                      f'({type(e).__name__}: {e}); decode_head.in_channels is checked at the first forward',
                      logger='current', level=logging.WARNING)
            return
        finally:
            for m, mode in training:
                m.training = mode
        if list(found) != list(expected):
            raise ValueError(
                f'{type(self).__name__}: decode_head {type(head).__name__} has in_channels={list(expected)} '
                f'but the backbone {type(self.backbone).__name__} outputs {len(found)} features with '
                f'channels {found}; set decode_head.in_channels={found} (or change the backbone\'s '
                f'out_indices / widths)')

    # ------------------------------------------------------------------ features and logits
    def extract_feats(self, inputs: Tensor, tasks: Sequence[str]) -> Dict[str, List[Tensor]]:
        """``{task: multi-scale features}``: one (possibly batched) task-conditioned call, or one shared pass."""
        if self.task_wise_peft:
            return self.backbone.peft.forward_tasks(inputs, list(tasks))
        feats = self.backbone(inputs)
        return OrderedDict((t, feats) for t in tasks)

    def _forward(self, inputs: Tensor, data_samples=None, tasks: Optional[Sequence[str]] = None) -> Dict[str, Tensor]:
        """``tensor`` mode: ``{task: decoder output (B, C_t, H/4, W/4)}``."""
        tasks = _check_tasks(tasks, self.tasks, type(self).__name__) if tasks is not None else self.tasks
        feats = self.extract_feats(inputs, tasks)
        return OrderedDict((t, self.decode_heads[t](feats[t])) for t in tasks)

    def forward(self, inputs: Tensor, data_samples: Optional[List[MultiTaskDataSample]] = None,
                mode: str = 'tensor', tasks: Optional[Sequence[str]] = None):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples, tasks=tasks)
        if mode == 'tensor':
            return self._forward(inputs, data_samples, tasks=tasks)
        raise RuntimeError(f'{type(self).__name__}: invalid mode {mode!r}; only "loss", "predict" and "tensor"')

    # ------------------------------------------------------------------ training
    def _stack_gt(self, task: str, samples: List[MultiTaskDataSample], size, device) -> Tensor:
        """Ground truth of ``task`` over the batch: ``(B, H, W)`` labels or ``(B, 3, H, W)`` normals."""
        gts = []
        for s in samples:
            field = f'gt_{task}'
            if field in s:
                gt = getattr(s, field).data
            else:  # allow_missing_gt: this image has no annotation of the task, every pixel is invalid
                shape = (3, *size) if task == 'normals' else (1, *size)
                gt = torch.full(shape, _INVALID[task], device=device,
                                dtype=torch.float32 if task == 'normals' else torch.long)
            if tuple(gt.shape[-2:]) != tuple(size):
                raise ValueError(f'gt_{task} of size {tuple(gt.shape[-2:])} does not match the batch input '
                                 f'size {tuple(size)}; training ground truth must be at the input size')
            gts.append(gt)
        gt = torch.stack(gts)
        return gt if task == 'normals' else gt[:, 0]

    def _check_batch_tasks(self, samples: List[MultiTaskDataSample]) -> None:
        """Every sample must carry ground truth of every task of the model.

        A task without ground truth would get a loss of 0 and its head would never train, while the run
        looks normal. (Ignored pixels, e.g. an all-255 parts map of an image without persons, are
        ground truth: the field is there.)
        """
        lacking = [(s, [t for t in self.tasks if f'gt_{t}' not in s]) for s in samples]
        lacking = [(s, ts) for s, ts in lacking if ts]
        if not lacking:
            return
        missing = [t for t in self.tasks if any(t in ts for _, ts in lacking)]
        sample = lacking[0][0]
        has = [t for t in self.tasks if f'gt_{t}' in sample]
        image = sample.metainfo.get('img_path', '(no img_path)')
        raise ValueError(
            f'{type(self).__name__}: the training batch has no ground truth for task(s) {missing} of '
            f'the model (model tasks {list(self.tasks)}; {len(lacking)} of {len(samples)} images lack '
            f'them, e.g. {image} with ground truth for {has}, dataset tasks '
            f'{sample.metainfo.get("tasks", "unknown")}); their losses would be 0 and their heads never '
            f'train. Set model.tasks to the dataset\'s tasks, or add {missing} to the dataset\'s tasks '
            f'(train_dataloader.dataset.tasks); if some images legitimately lack a task, set '
            f'model.allow_missing_gt=True')

    def loss(self, inputs: Tensor, data_samples: List[MultiTaskDataSample]) -> Dict[str, Tensor]:
        """``{'loss_<task>': weight_t * L_t}`` for every task of the model (logits upsampled to the input size)."""
        if not data_samples:
            raise ValueError(f'{type(self).__name__}.loss needs data samples with ground truth')
        if not self.allow_missing_gt:
            self._check_batch_tasks(data_samples)
        size = inputs.shape[-2:]
        logits = self._forward(inputs)
        losses = OrderedDict()
        for t, logit in logits.items():
            pred = F.interpolate(logit, size=size, mode='bilinear', align_corners=self.align_corners)
            gt = self._stack_gt(t, data_samples, size, inputs.device)
            losses[f'loss_{t}'] = self.loss_weights[t] * self.losses[t](pred, gt)
        return losses

    # ------------------------------------------------------------------ inference
    def predict(self, inputs: Tensor, data_samples: Optional[List[MultiTaskDataSample]] = None,
                tasks: Optional[Sequence[str]] = None) -> List[MultiTaskDataSample]:
        """Predictions at each image's original size (``metainfo['ori_shape']``), only for ``tasks``.

        ``tasks=None`` predicts ``test_tasks``. Each sample gets ``pred_<task>``: class ids ``(1, H, W)``
        long (semseg, parts), saliency probability ``(1, H, W)`` (sal), unit normals ``(3, H, W)``.
        The decoder output is upsampled to the batch input size, cropped to the unpadded image
        (``img_shape``) and resized to ``ori_shape`` (bilinear, on logits).
        """
        tasks = _check_tasks(tasks, self.tasks, type(self).__name__) if tasks is not None else self.test_tasks
        batch = inputs.shape[0]
        if data_samples is None:
            data_samples = [MultiTaskDataSample(metainfo=dict(ori_shape=tuple(inputs.shape[-2:])))
                            for _ in range(batch)]
        if len(data_samples) != batch:
            raise ValueError(f'{len(data_samples)} data samples for {batch} images')
        logits = self._forward(inputs, tasks=tasks)
        for t, logit in logits.items():
            logit = F.interpolate(logit, size=inputs.shape[-2:], mode='bilinear', align_corners=self.align_corners)
            for i, sample in enumerate(data_samples):
                h, w = sample.metainfo.get('img_shape', inputs.shape[-2:])[:2]
                ori = sample.metainfo.get('ori_shape', (h, w))[:2]
                out = logit[i:i + 1, :, :h, :w]
                if tuple(out.shape[-2:]) != tuple(ori):
                    out = F.interpolate(out, size=tuple(ori), mode='bilinear', align_corners=self.align_corners)
                out = out[0]
                if t in ('semseg', 'parts'):
                    pred = out.argmax(dim=0, keepdim=True)
                elif t == 'sal':
                    pred = out.sigmoid()
                else:
                    pred = F.normalize(out, dim=0)
                setattr(sample, f'pred_{t}', PixelData(data=pred))
        return data_samples
