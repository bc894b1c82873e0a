from .peft_backbone import PEFTBackbone

__all__ = ['PEFTBackbone']
