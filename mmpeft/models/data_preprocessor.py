"""MultiTaskDataPreProcessor: normalise and stack images, pad multi-task ground truth alike."""
from typing import Optional, Sequence

import torch.nn.functional as F
from mmengine.model import ImgDataPreprocessor
from mmengine.structures import PixelData

from ..registry import MODELS

#: ground-truth fields and the value that marks a padded (invalid) pixel
GT_PAD_VALUES = dict(gt_semseg=255, gt_parts=255, gt_sal=255, gt_normals=0.0)


@MODELS.register_module()
class MultiTaskDataPreProcessor(ImgDataPreprocessor):
    """mmengine's :class:`ImgDataPreprocessor` (BGR->RGB, normalise, pad to a common size, stack) for
    :class:`~mmpeft.structures.MultiTaskDataSample` batches.

    mmseg's ``SegDataPreProcessor`` pads only ``gt_sem_seg``; here every ``gt_*`` field of the contract
    whose size is the sample's (unpadded) input size is padded bottom/right to the batch input size with
    its invalid value (255 for labels, the zero vector for normals), so losses can be computed on the
    stacked batch. Ground truth at another size (the test pipeline keeps it at the original image size)
    is left as is. Each sample's metainfo gets ``batch_input_shape`` and ``pad_shape``.

    Args:
        mean, std: per-channel normalisation (ImageNet by default, in RGB order).
        bgr_to_rgb: the pipeline loads BGR images (mmcv's default), the pretrained Swin expects RGB.
        pad_size_divisor, pad_value: as :class:`ImgDataPreprocessor`.
    """

    def __init__(self, mean: Optional[Sequence[float]] = (123.675, 116.28, 103.53),
                 std: Optional[Sequence[float]] = (58.395, 57.12, 57.375), bgr_to_rgb: bool = True,
                 pad_size_divisor: int = 1, pad_value: float = 0, non_blocking: bool = False):
        super().__init__(mean=mean, std=std, pad_size_divisor=pad_size_divisor, pad_value=pad_value,
                         bgr_to_rgb=bgr_to_rgb, non_blocking=non_blocking)

    def _check_channels(self, data: dict) -> None:
        """Refuse images whose channel count is not the configured one.

        mmengine's preprocessor would otherwise broadcast a 1-channel image against the 3 means, or
        drop a 4th (alpha) channel in the BGR->RGB swap, and train on something else without a word.
        """
        if self._channel_conversion:
            expected = 3
        elif self._enable_normalize:
            expected = self.mean.shape[0]
        else:
            return
        inputs = data['inputs']
        channels = [img.shape[-3] if img.dim() >= 3 else 1 for img in inputs]
        bad = [i for i, c in enumerate(channels) if c != expected]
        if not bad:
            return
        samples = data.get('data_samples') or []
        i = bad[0]
        image = samples[i].metainfo.get('img_path', f'image {i} of the batch') if i < len(samples) \
            else f'image {i} of the batch'
        raise ValueError(
            f'{type(self).__name__}: {image} has {channels[i]} channel(s) (shape {tuple(inputs[i].shape)}), '
            f'the model expects {expected} (mean / std / bgr_to_rgb are set for {expected}); '
            f'{len(bad)} of {len(channels)} images of the batch differ. Load images as 3-channel color '
            f"(LoadImageFromFile with color_type='color' converts grayscale and drops alpha), or set "
            f'mean / std for {channels[i]} channels with bgr_to_rgb=False and the backbone\'s in_channels')

    def forward(self, data: dict, training: bool = False) -> dict:
        self._check_channels(data)
        sizes = [tuple(img.shape[-2:]) for img in data['inputs']] if isinstance(data['inputs'], (list, tuple)) \
            else [tuple(data['inputs'].shape[-2:])] * len(data['inputs'])
        data = super().forward(data, training)
        inputs, samples = data['inputs'], data.get('data_samples')
        h, w = inputs.shape[-2:]
        for size, sample in zip(sizes, samples or []):
            sample.set_metainfo(dict(batch_input_shape=(h, w), pad_shape=(h, w)))
            for field, value in GT_PAD_VALUES.items():
                if field not in sample:
                    continue
                gt = getattr(sample, field).data
                if tuple(gt.shape[-2:]) == size and size != (h, w):
                    padded = F.pad(gt, (0, w - size[1], 0, h - size[0]), value=value)
                    setattr(sample, field, PixelData(data=padded))
        return dict(inputs=inputs, data_samples=samples)
