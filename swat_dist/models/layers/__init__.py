"""SWAT's building blocks: structure-aware tokenization and structure-aware mixing."""

from .conv_mlp import ConvMlpGeneral
from .structure import (
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
from .tokenizer import PatchTokenizer, StructureAwareTokenizer, check_input_size

__all__ = [
    "ConvMlpGeneral",
    "PatchTokenizer",
    "StructureAwareTokenizer",
    "StructuredLinear",
    "attention_projections",
    "check_input_size",
    "grid_map",
    "map_from_tokens",
    "segment_maps",
    "token_images",
    "tokens_from_grid",
    "tokens_from_images",
    "tokens_from_map",
    "tokens_from_segment_maps",
]
