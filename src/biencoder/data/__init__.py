"""Readers: texts to encode, training pairs, MS MARCO and BEIR layouts."""


class DataFormatError(ValueError):
    """A data file does not hold what was expected; the message names the file and line."""


__all__ = ["DataFormatError"]
