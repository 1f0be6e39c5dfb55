"""The ADE20K benchmark's segmentation model: a timm backbone, a neck to 4 levels, UperNet + auxiliary FCN."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .backbone import DROP_PATH, build_features, inspect
from .fcn import FCNHead
from .neck import PYRAMID_STRIDES
from .upernet import UPerHead

# The parameters of these layers take no weight decay (SEG_SPEC 4: "none on ... norms").
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
# SEG_SPEC 4 exempts relative-position tables whatever the backbone declares (ours declare them as a keyword).
_NO_DECAY_KEYWORDS = frozenset({"relative_position_bias_table"})
AUX_LEVEL = 2  # the stride-16 map (stage 3 of Swin)


class SegLogits(NamedTuple):
    """Training-mode output: unscaled logits, ``main`` at stride 4 and ``aux`` at stride 16 of the input."""

    main: Tensor
    aux: Tensor


class SegmentationModel(nn.Module):
    """UperNet (+ auxiliary FCN head) over a Swin or DeiT/ViT backbone from timm's registry (SEG_SPEC 3).

    ``forward(x)`` with x (B, 3, H, W):

    - training mode: :class:`SegLogits` ``(main, aux)``, main (B, num_classes, H/4, W/4) from UperNet, aux
      (B, num_classes, H/16, W/16) from the FCN head on the stride-16 map;
    - eval mode: main only.

    Logits are NOT upsampled: the loss resizes them to the crop, the evaluation to the original label size
    (bilinear). ``output_stride`` / ``aux_stride`` give the factors.

    Inputs: Swin takes sides that are multiples of 32 (16 for the 3-stage micro Swin) and of any size once
    built; DeiT/ViT sides must be multiples of the patch and match ``img_size`` (the position-embedding grid)
    unless the backbone is built with ``dynamic_img_size=True`` (then the embedding is resampled per forward).
    ``img_size`` also sizes timm Swin's attention masks (pass ``dynamic_img_size=True`` there for other sizes).
    Training-mode BatchNorm after the PPM's 1x1 pooling needs batch >= 2 per BN group.

    ``backbone_kwargs`` go to ``timm.create_model`` (e.g. ``pretrained=True,
    pretrained_cfg_overlay=dict(file=...)`` for ImageNet weights, whose position embeddings are resampled to
    the ``img_size`` grid on load). ``drop_path_rate=None`` takes the published rate: 0.3 Swin, 0.1 DeiT/ViT.
    """

    output_stride = PYRAMID_STRIDES[0]
    aux_stride = PYRAMID_STRIDES[AUX_LEVEL]

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        img_size: int | tuple[int, int] = 512,
        drop_path_rate: float | None = None,
        channels: int = 512,
        aux_channels: int = 256,
        dropout: float = 0.1,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        arch = inspect(backbone, **backbone_kwargs)
        self.family = arch.family
        rate = DROP_PATH[arch.family] if drop_path_rate is None else drop_path_rate
        self.backbone, self.neck = build_features(backbone, arch, img_size, rate, **backbone_kwargs)
        levels: list[int] = self.neck.out_channels  # type: ignore[assignment]
        self.decode_head = UPerHead(levels, num_classes, channels, dropout=dropout)
        self.aux_head = FCNHead(levels[AUX_LEVEL], num_classes, aux_channels, dropout)
        self._backbone_no_decay = arch.no_weight_decay
        self._backbone_no_decay_keywords = arch.no_weight_decay_keywords | _NO_DECAY_KEYWORDS

    def forward(self, x: Tensor) -> Tensor | SegLogits:
        maps = self.neck(self.backbone(x))
        main = self.decode_head(maps)
        if not self.training:
            return main
        return SegLogits(main, self.aux_head(maps[AUX_LEVEL]))

    def backbone_param_names(self) -> list[str]:
        """Names of the pretrained backbone's parameters (for a separate lr or layer-wise decay); the
        neck's and heads' are new and not among them."""
        return [n for n, _ in self.named_parameters() if n.startswith("backbone.")]

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay: what the backbone declares (position embeddings), relative
        position tables, and every normalization layer's weight and bias (backbone, neck and heads).

        Note: mmseg's configs match the key 'norm' in names, which leaves its heads' BatchNorms (named 'bn')
        decayed; we exempt every norm, as the spec's wording says.
        """
        out = set()
        for name, _ in self.backbone.named_parameters():
            rel = name.removeprefix("model.")  # timm's FeatureGetterNet holds the classifier as .model
            if rel in self._backbone_no_decay or any(k in rel for k in self._backbone_no_decay_keywords):
                out.add(f"backbone.{name}")
        for mod_name, module in self.named_modules():
            if isinstance(module, _NORMS):
                out |= {f"{mod_name}.{p}" for p, _ in module.named_parameters(recurse=False)}
        return out
