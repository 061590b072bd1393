"""Data: raw sources -> the canonical dataset -> evaluation protocols -> batches."""

from genrec.data.dataset import Dataset, Sequences
from genrec.data.feature_tables import FeatureTables, fit_features
from genrec.data.features import FeatureSpec
from genrec.data.filters import Filters
from genrec.data.prepare import prepare_dataset
from genrec.data.splits import EvalCases, Split, leave_one_out, make_split, new_item_split, time_split, user_split

__all__ = [
    "Dataset",
    "EvalCases",
    "FeatureSpec",
    "FeatureTables",
    "Filters",
    "Sequences",
    "Split",
    "leave_one_out",
    "fit_features",
    "make_split",
    "new_item_split",
    "prepare_dataset",
    "time_split",
    "user_split",
]
