from .hst_vit import HSTViT
from .peft_backbone import build_peft_backbone
from .vit_encoder import ViTEncoder
from .vit_pyramid import ViTPyramid

__all__ = ['build_peft_backbone', 'HSTViT', 'ViTEncoder', 'ViTPyramid']
from .polyhistor_swin import PolyhistorSwin  # noqa: E402
from .pretrained_swin import PretrainedSwin  # noqa: E402

__all__ += ['PolyhistorSwin', 'PretrainedSwin']
