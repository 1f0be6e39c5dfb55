"""SWAT models and their baselines, registered in timm's registry.

``import swat_dist`` then ``timm.create_model('swat_deit_tiny_patch16_224')``: the family modules
(:data:`FAMILIES`, each registering its entrypoints) are imported the moment timm is
(:mod:`swat_dist.registration`). This package itself imports only the zoo table, so the config can check
model names on a login node without torch or timm.
"""

from .zoo import BASELINE_OF, BY_NAME, SWAT_OF, ZOO, ZooEntry, is_swat

FAMILIES = ("mixer", "resmlp", "swin", "vit")  # modules whose import registers their models

__all__ = ["BASELINE_OF", "BY_NAME", "FAMILIES", "SWAT_OF", "ZOO", "ZooEntry", "is_swat"]
