"""Co-occurrence tables between projects: merged from several sources, counted once."""

from __future__ import annotations

import pytest
import scipy.sparse as sp

from kuoro.fusion.cooccurrence import MAX_SUBJECTS, SubjectCooccurrence
from kuoro.project.cooccurrence_files import merge, pair_counts

CORPUS = [{0, 1}, {0, 1, 2}, {0, 3}, {4}, set(range(MAX_SUBJECTS + 1))]


def test_pair_counts_round_trip_and_merge() -> None:
    t = SubjectCooccurrence.from_subject_sets(CORPUS, MAX_SUBJECTS + 1)
    pairs = pair_counts(t)
    assert pairs[0, 0] == 3 and pairs[0, 1] == 2 and pairs[1, 0] == 2
    other = SubjectCooccurrence.from_subject_sets([{0, 4}, {4}], MAX_SUBJECTS + 1)
    both = merge([t, other])
    assert both.documents == 6
    assert both.counts[:5].tolist() == [4, 2, 1, 1, 3]
    assert both.conditional[4, 0] == pytest.approx(1 / 3)
    assert isinstance(both.conditional, sp.csr_matrix)
