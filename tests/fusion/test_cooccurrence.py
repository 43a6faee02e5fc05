"""Subject co-occurrence tables: counting, the features, the file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from kuoro.errors import ModelError
from kuoro.fusion.cooccurrence import LIFT_SCALE, MAX_SUBJECTS, SubjectCooccurrence

# Five documents over six concepts; the last has too many subjects to count.
CORPUS = [{0, 1}, {0, 1, 2}, {0, 3}, {4}, set(range(MAX_SUBJECTS + 1))]


def table() -> SubjectCooccurrence:
    return SubjectCooccurrence.from_subject_sets(CORPUS, MAX_SUBJECTS + 1)


def test_counts_and_conditional_probabilities_by_hand() -> None:
    t = table()
    assert t.documents == 4  # the one with 11 subjects is left out
    assert t.counts[:6].tolist() == [3, 2, 1, 1, 1, 0]
    p = t.conditional.toarray()
    assert p[0, 1] == pytest.approx(2 / 3)  # of the 3 documents with 0, 2 have 1
    assert p[1, 0] == pytest.approx(1.0)
    assert p[2, 0] == p[2, 1] == pytest.approx(1.0)
    assert p[0, 3] == pytest.approx(1 / 3)
    assert np.diag(p).sum() == 0 and p[4].sum() == 0  # 4 only ever alone
    assert t.conditional.dtype == np.float32


def test_ids_outside_the_vocabulary_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        SubjectCooccurrence.from_subject_sets([{0, 9}], 5)


def test_features_of_one_document_by_hand() -> None:
    t = table()
    # One document with candidates 0, 1, 3 weighted 0.5, 0.2, 0.1.
    concepts = np.array([0, 1, 3])
    weights = np.array([0.5, 0.2, 0.1], np.float32)
    implied, lift, prior = t.features(np.zeros(3, np.int64), concepts, weights, 1)
    # Candidate 1: the others are 0 (P(1|0) = 2/3) and 3 (P(1|3) = 0).
    assert implied[1] == pytest.approx((0.5 * 2 / 3) / (0.5 + 0.1))
    assert implied[0] == pytest.approx((0.2 * 1.0 + 0.1 * 1.0) / (0.2 + 0.1))
    assert implied[2] == pytest.approx((0.5 * 1 / 3) / (0.5 + 0.2))
    assert lift[1] == pytest.approx(math.log1p(implied[1] / (2 / 4)) / LIFT_SCALE, rel=1e-5)
    assert prior.tolist() == pytest.approx(
        [1.0, math.log(3) / math.log(4), math.log(2) / math.log(4)]
    )


def test_features_never_mix_documents() -> None:
    t = table()
    # Concept 0 and 1 go together, but here they are in different documents.
    implied, _, _ = t.features(np.array([0, 1]), np.array([0, 1]), np.ones(2, np.float32), 2)
    assert implied.tolist() == [0.0, 0.0]


def test_an_empty_table_gives_zero_features() -> None:
    empty = SubjectCooccurrence.from_subject_sets([], 4)
    implied, lift, prior = empty.features(np.zeros(2, np.int64), np.array([1, 2]), np.ones(2), 1)
    assert not implied.any() and not lift.any() and not prior.any()


def test_save_load_and_resize(tmp_path: Path) -> None:
    t = table()
    t.save(tmp_path / "t.npz")
    back = SubjectCooccurrence.load(tmp_path / "t.npz")
    assert back.documents == t.documents and (back.counts == t.counts).all()
    assert (back.conditional != t.conditional).nnz == 0
    grown = back.resized(20)
    assert grown.n_concepts == 20 and grown.conditional.shape == (20, 20)
    assert (grown.conditional[:11, :11] != t.conditional).nnz == 0


def test_a_file_of_another_kind_is_a_model_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", counts=np.zeros(3))
    with pytest.raises(ModelError, match="co-occurrence table"):
        SubjectCooccurrence.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="co-occurrence table"):
        SubjectCooccurrence.load(tmp_path / "junk.npz")
