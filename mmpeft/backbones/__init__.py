from .hst_vit import HSTViT
from .peft_backbone import PEFTBackbone
from .vit_pyramid import ViTPyramid

__all__ = ['PEFTBackbone', 'HSTViT', 'ViTPyramid']
from .polyhistor_swin import PolyhistorSwin, PretrainedSwin  # noqa: E402

__all__ += ['PolyhistorSwin', 'PretrainedSwin']
