"""Errors raised while reading a model folder."""

from __future__ import annotations


class ModelFolderError(ValueError):
    """A model folder is missing a file, or a file in it is not what was expected."""
