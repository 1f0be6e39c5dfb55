"""The model zoo: every SWAT model, its baseline, and the spec's complexity targets (SWAT_SPEC section 4).

One table drives the tests (exact counts, FLOP targets), ``swat-dist models`` and, later, the paper
recipe configs, so a name or a target lives in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooEntry:
    """A SWAT model and the model it is compared against.

    ``params``/``gflops`` are SWAT_SPEC section 4's targets (exact params; fvcore GFLOPs at 224 px),
    ``None`` for our CPU-sized variants, which have no published counterpart.
    """

    name: str
    baseline: str
    family: str
    params: int | None = None
    gflops: float | None = None
    baseline_params_m: float | None = None
    baseline_gflops: float | None = None


ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("swat_deit_tiny_patch16_224", "deit_tiny_patch16_224", "deit", 5_827_883, 1.398, 5.717, 1.258),
    ZooEntry("swat_deit_small_patch16_224", "deit_small_patch16_224", "deit", 22_264_910, 4.898, 22.051, 4.608),
    ZooEntry("swat_deit_base_patch32_224", "vit_base_patch32_224", "deit", 86_339_252, 4.519, 88.224, 4.414),
    ZooEntry("swat_mixer_ti16_224", "mixer_ti16_224", "mixer", 5_098_572, 0.985, 5.071, 0.968),
    ZooEntry("swat_mixer_s16_224", "mixer_s16_224", "mixer", 18_583_696, 3.830, 18.528, 3.785),
    ZooEntry("swat_mixer_b32_224", "mixer_b32_224", "mixer", 58_423_863, 3.256, 60.293, 3.242),
    ZooEntry("swat_resmlp_12_224", "resmlp_12_224", "resmlp", 15_560_766, 3.079, 15.351, 3.010),
    ZooEntry(
        "swat_swin_tiny_patch4_window7_224", "swin_tiny_patch4_window7_224", "swin", 27_110_704, 4.706, 28.288, 4.509
    ),
    ZooEntry(
        "swat_swin_small_patch4_window7_224", "swin_small_patch4_window7_224", "swin", 48_915_760, 9.153, 49.606, 8.769
    ),
    # CPU-sized variants for 32 px images (digits, CIFAR-like data); ours, no spec targets.
    ZooEntry("swat_deit_micro_patch4_32", "deit_micro_patch4_32", "deit"),
    ZooEntry("swat_mixer_micro_patch4_32", "mixer_micro_patch4_32", "mixer"),
    ZooEntry("swat_resmlp_micro_patch4_32", "resmlp_micro_patch4_32", "resmlp"),
    ZooEntry("swat_swin_micro_patch4_window4_32", "swin_micro_patch4_window4_32", "swin"),
)

BY_NAME = {e.name: e for e in ZOO}
BASELINE_OF = {e.name: e.baseline for e in ZOO}
SWAT_OF = {e.baseline: e.name for e in ZOO}


def is_swat(name: str) -> bool:
    """True for a SWAT model name (the ``swat_`` prefix is the convention, see USERS.md)."""
    return name.startswith("swat_")
