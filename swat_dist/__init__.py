"""swat_dist: distributed pretraining of SWAT vision models.

``import swat_dist`` makes every SWAT model and our extra baselines available in timm's registry
(``timm.create_model('swat_deit_tiny_patch16_224')``) without importing torch or timm itself: they are
registered when timm is imported (:mod:`.registration`), so the CLI and the config stay fast on a
login node.
"""

from . import registration

registration.install()

__version__ = "0.1.0"
