"""The data room: item catalogues and user interactions, read from the usual recommendation formats.

- :mod:`~semid.data.model`: :class:`Catalogue`, :class:`Interactions`, :class:`Dataset`, :class:`ParseReport`.
- :func:`load_dataset`: one entry point for RecBole, P5, Amazon 2014/2018, MovieLens and JSONL/CSV/Parquet.
- :mod:`~semid.data.split`: k-core filtering and the leave-one-out split of TIGER / P5 / S3-Rec.
- :func:`make_demo_dataset`: a synthetic beauty catalogue with user sequences, generated in well under 2 s.

Example::

    >>> from semid.data import make_demo_dataset, k_core, leave_one_out
    >>> ds = make_demo_dataset(n_items=300, n_users=200, seed=0)
    >>> split = leave_one_out(ds.sequences())
    >>> len(split.test_target) == 200
    True
"""

from semid.data.demo import make_demo_dataset
from semid.data.model import (
    Catalogue,
    Dataset,
    DatasetStats,
    Interactions,
    Origin,
    ParseIssue,
    ParseReport,
    Sequences,
)
from semid.data.readers import FORMATS, detect, load_dataset
from semid.data.split import LeaveOneOut, k_core, leave_one_out

__all__ = [
    "FORMATS",
    "Catalogue",
    "Dataset",
    "DatasetStats",
    "Interactions",
    "LeaveOneOut",
    "Origin",
    "ParseIssue",
    "ParseReport",
    "Sequences",
    "detect",
    "k_core",
    "leave_one_out",
    "load_dataset",
    "make_demo_dataset",
]
