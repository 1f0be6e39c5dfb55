"""swat_dist: distributed pretraining of SWAT vision models.

Importing the package registers every SWAT model and our extra baselines in timm's registry.
"""

from . import models  # noqa: F401  (registers swat_* models with timm)

__version__ = "0.1.0"
