from .synthetic_seg import SyntheticSegDataset, generate_synthetic_seg

__all__ = ['SyntheticSegDataset', 'generate_synthetic_seg']
