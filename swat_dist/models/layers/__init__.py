"""SWAT's building blocks: structure-aware tokenization and structure-aware mixing.

The token-layout helpers are exported from :mod:`.layout` (reshape/permute: scriptable and fx-traceable),
which computes exactly what :mod:`.structure`'s einops versions do.
"""

from .conv_mlp import ConvMlpGeneral
from .depthwise import DepthwiseConv2d, depthwise_conv2d
from .layout import (
    grid_map,
    map_from_tokens,
    segment_maps,
    token_images,
    tokens_from_grid,
    tokens_from_images,
    tokens_from_map,
    tokens_from_segment_maps,
)
from .structured_linear import StructuredLinear, attention_projections
from .tokenizer import PatchTokenizer, StructureAwareTokenizer, check_input_size, input_grid

__all__ = [
    "ConvMlpGeneral",
    "DepthwiseConv2d",
    "PatchTokenizer",
    "StructureAwareTokenizer",
    "StructuredLinear",
    "attention_projections",
    "check_input_size",
    "depthwise_conv2d",
    "grid_map",
    "input_grid",
    "map_from_tokens",
    "segment_maps",
    "token_images",
    "tokens_from_grid",
    "tokens_from_images",
    "tokens_from_map",
    "tokens_from_segment_maps",
]
