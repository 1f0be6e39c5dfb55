"""Semantic segmentation (SEG_SPEC 3): UperNet and its auxiliary FCN head over Swin or DeiT/ViT backbones.

One file per concern: ``upernet`` (decode head), ``fcn`` (auxiliary head), ``neck`` (features -> the
4-level pyramid), ``backbone`` (which timm models, which features), ``model`` (the wrapper).
"""

from .backbone import vit_out_indices
from .fcn import FCNHead
from .model import SegLogits, SegmentationModel
from .neck import HierarchicalNeck, MultiLevelNeck
from .upernet import PyramidPooling, UPerHead

__all__ = [
    "FCNHead",
    "HierarchicalNeck",
    "MultiLevelNeck",
    "PyramidPooling",
    "SegLogits",
    "SegmentationModel",
    "UPerHead",
    "vit_out_indices",
]
