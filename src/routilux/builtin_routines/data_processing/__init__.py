"""Built-in routines that change or check data: transforming, validating, mapping."""

from __future__ import annotations

from .data_transformer import DataTransformer
from .data_validator import DataValidator
from .mapper import Mapper

__all__ = ["DataTransformer", "DataValidator", "Mapper"]
