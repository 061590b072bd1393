"""genrec: generative recommendation — one data format, one evaluator, every model family."""

__version__ = "0.1.0"
