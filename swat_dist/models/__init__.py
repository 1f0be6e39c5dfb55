"""SWAT models and their baselines, registered in timm's registry on import.

``import swat_dist`` (or ``swat_dist.models``) then ``timm.create_model('swat_deit_tiny_patch16_224')``.
"""

from . import mixer, resmlp, swin, vit  # noqa: F401  (importing registers the entrypoints)
from .zoo import BASELINE_OF, BY_NAME, SWAT_OF, ZOO, ZooEntry, is_swat

__all__ = ["BASELINE_OF", "BY_NAME", "SWAT_OF", "ZOO", "ZooEntry", "is_swat"]
