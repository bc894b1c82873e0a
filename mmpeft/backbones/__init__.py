from .peft_backbone import PEFTBackbone
from .hst_vit import HSTViT

__all__ = ['PEFTBackbone', 'HSTViT']
