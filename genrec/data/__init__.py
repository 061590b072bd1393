"""Data: raw sources -> the canonical dataset -> evaluation protocols -> batches."""

from genrec.data.dataset import Dataset, Sequences
from genrec.data.filters import Filters
from genrec.data.prepare import prepare_dataset
from genrec.data.splits import EvalCases, Split, leave_one_out, make_split, time_split, user_split

__all__ = [
    "Dataset",
    "EvalCases",
    "Filters",
    "Sequences",
    "Split",
    "leave_one_out",
    "make_split",
    "prepare_dataset",
    "time_split",
    "user_split",
]
