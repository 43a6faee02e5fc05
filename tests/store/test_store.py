"""SuggestionStore: exact round trips, batches, map growth, a killed writer, a second writer.
Building a store from projects' suggestions is tested in project/test_source_stores.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from kuoro.store.suggestion_store import StoreError, SuggestionStore

from support import store_writer
from support.store_writer import SOURCES, VOCAB_SIZE, document_rows, open_store
from support.stores import assert_same_rows, concat

WRITER = Path(store_writer.__file__)


def random_rows(
    rng: np.random.Generator, n: int, v: int, top_k: int
) -> tuple[list[np.ndarray], sp.csr_matrix]:
    """Gold ids per document and one source block with 0..top_k scores per row."""
    gold = [rng.choice(v, size=int(rng.integers(0, 5)), replace=False) for _ in range(n)]
    counts = rng.integers(0, top_k + 1, n)
    counts[::7] = 0  # some documents where the source says nothing
    ids = np.concatenate([np.sort(rng.choice(v, c, replace=False)) for c in counts])
    # Scores over many magnitudes, tiny ones included: float32 must survive bit for bit.
    scores = (rng.random(len(ids)) ** 8).astype(np.float32)
    indptr = np.concatenate(([0], np.cumsum(counts)))
    return gold, sp.csr_matrix((scores, ids, indptr), shape=(n, v))


def new_store(path: Path, **kwargs: object) -> SuggestionStore:
    options: dict[str, object] = {
        "source_names": ["a", "b"],
        "vocab_size": 3000,
        "fingerprints": {"vocabulary": "v"},
        "top_k": 50,
        "chunk_size": 64,
    }
    options.update(kwargs)
    return SuggestionStore.create(path, **options)  # type: ignore[arg-type]


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[np.ndarray], list[sp.csr_matrix]]:
    """A complete store of 300 documents in chunks of 64 (the last one short)."""
    rng = np.random.default_rng(1)
    gold, a = random_rows(rng, 300, 3000, 50)
    _, b = random_rows(rng, 300, 3000, 50)
    path = tmp_path / "store"
    with new_store(path) as store:
        for start in range(0, 300, 37):  # appends that do not line up with chunks
            end = min(start + 37, 300)
            store.append(gold[start:end], [a[start:end], b[start:end]])
        store.mark_complete()
    return path, gold, [a, b]


def test_round_trip_is_bit_exact(
    written: tuple[Path, list[np.ndarray], list[sp.csr_matrix]],
) -> None:
    path, gold, sources = written
    with SuggestionStore.open(path) as store:
        assert len(store) == 300 and store.complete
        assert store.source_names == ("a", "b") and store.vocab_size == 3000
        assert store.fingerprints == {"vocabulary": "v"}
        everything = concat(store.batches(1000))
        assert np.array_equal(everything.positions, np.arange(300))
        for got, expected in zip(everything.sources, sources, strict=True):
            assert_same_rows(got, expected)
        for i, ids in enumerate(gold):
            row = everything.gold[i]
            assert list(row.indices) == sorted(ids) and set(row.data) <= {1.0}
        expected_prior = np.bincount(np.concatenate(gold), minlength=3000)
        assert np.array_equal(store.prior(), expected_prior)


def test_chunks_and_sequential_batches(
    written: tuple[Path, list[np.ndarray], list[sp.csr_matrix]],
) -> None:
    path, _, sources = written
    with SuggestionStore.open(path) as store:
        assert list(store._chunk_docs) == [64, 64, 64, 64, 44]  # a short last chunk
        batches = list(store.batches(100))  # batches span chunk boundaries
        assert [len(b) for b in batches] == [100, 100, 100]
        assert np.array_equal(batches[1].positions, np.arange(100, 200))
        assert_same_rows(batches[1].sources[1], sources[1][100:200])


def test_shuffled_batches_cover_each_document_once(
    written: tuple[Path, list[np.ndarray], list[sp.csr_matrix]],
) -> None:
    path, _, sources = written
    with SuggestionStore.open(path) as store:
        epochs = {seed: concat(store.batches(32, shuffle=True, seed=seed)) for seed in (0, 1)}
        again = concat(store.batches(32, shuffle=True, seed=0))
    for epoch in epochs.values():
        assert sorted(epoch.positions) == list(range(300))
        assert not np.array_equal(epoch.positions, np.arange(300))
        # Each row still belongs to its document.
        order = np.argsort(epoch.positions)
        assert_same_rows(epoch.sources[0][order], sources[0])
    assert not np.array_equal(epochs[0].positions, epochs[1].positions)
    assert np.array_equal(again.positions, epochs[0].positions)


def test_positions_select_a_subset(
    written: tuple[Path, list[np.ndarray], list[sp.csr_matrix]],
) -> None:
    path, _, sources = written
    held_out = np.array([5, 64, 65, 199, 250, 299, 3])
    rest = np.setdiff1d(np.arange(300), held_out)
    with SuggestionStore.open(path) as store:
        validation = concat(store.batches(4, positions=held_out))
        training = concat(store.batches(16, shuffle=True, seed=3, positions=rest))
        with pytest.raises(ValueError, match=r"positions must lie in \[0, 300\)"):
            next(store.batches(4, positions=np.array([300])))
    assert list(validation.positions) == sorted(held_out)
    assert_same_rows(validation.sources[1], sources[1][np.sort(held_out)])
    assert sorted(training.positions) == list(rest)


def test_bad_input_and_state_are_refused(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s")
    rng = np.random.default_rng(0)
    gold, rows = random_rows(rng, 4, 3000, 50)
    with pytest.raises(ValueError, match="1 source blocks for 2 sources"):
        store.append(gold, [rows])
    with pytest.raises(ValueError, match="more than top_k=50"):
        store.append(gold[:1], [rows[:1], sp.csr_matrix(np.ones((1, 3000), np.float32))])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        store.append([[3000]], [rows[:1], rows[:1]])
    store.append(gold, [rows, rows])
    store.close()  # flushes the 4 buffered documents
    with pytest.raises(StoreError, match="built with other source_names"):
        new_store(tmp_path / "s", source_names=["a", "c"])
    with new_store(tmp_path / "s") as resumed:
        assert len(resumed) == 4
        resumed.mark_complete()
    with pytest.raises(StoreError, match="complete already"):
        new_store(tmp_path / "s")
    reader = SuggestionStore.open(tmp_path / "s")
    with pytest.raises(StoreError, match="reading only"):
        reader.append(gold, [rows, rows])
    reader.close()
    with pytest.raises(StoreError, match="closed"):
        reader.prior()
    with pytest.raises(StoreError, match="no suggestion store"):
        SuggestionStore.open(tmp_path / "nothing")


def test_prior_counts_committed_gold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stored prior lags behind.
    monkeypatch.setattr("kuoro.store.suggestion_store._PRIOR_EVERY", 3)
    rng = np.random.default_rng(4)
    gold, a = random_rows(rng, 500, 3000, 50)
    path = tmp_path / "prior"
    store = new_store(path)
    store.append(gold, [a, a])
    store._close(flush=False)  # as if killed: 7 chunks committed, 52 documents lost
    expected = np.bincount(np.concatenate(gold[:448]), minlength=3000)
    with SuggestionStore.open(path) as reader:
        assert len(reader) == 448 and np.array_equal(reader.prior(), expected)
    with new_store(path) as resumed:
        assert np.array_equal(resumed.prior(), expected)
        resumed.append(gold[448:], [a[448:], a[448:]])
        resumed.mark_complete()
    with SuggestionStore.open(path) as reader:
        assert np.array_equal(reader.prior(), np.bincount(np.concatenate(gold), minlength=3000))


def test_map_grows_as_needed(tmp_path: Path) -> None:
    initial = 64 * 1024
    rng = np.random.default_rng(2)
    path = tmp_path / "grown"
    store = new_store(path, _map_size=initial, top_k=100)
    expected = []
    for _ in range(10):
        gold, a = random_rows(rng, 200, 3000, 100)
        store.append(gold, [a, a])
        expected.append(a)
    store.mark_complete()
    store.close()
    # The map (initial × 2^k) holds a file over 8 times the initial map: it doubled k ≥ 4 times.
    assert (path / "data.mdb").stat().st_size > 8 * initial
    with SuggestionStore.open(path) as reader:
        assert_same_rows(concat(reader.batches(500)).sources[1], sp.vstack(expected, format="csr"))


def writer_output(process: subprocess.Popen[str]) -> Iterator[str]:
    assert process.stdout is not None
    for line in process.stdout:
        yield line.strip()


@pytest.mark.integration
def test_killed_writer_leaves_a_store_that_resumes(tmp_path: Path) -> None:
    path = tmp_path / "killed"
    command = [sys.executable, str(WRITER), str(path), "--documents", "400", "--chunk-size", "20"]
    slow = subprocess.Popen(
        [*command, "--delay", "0.004"], stdout=subprocess.PIPE, text=True, cwd=WRITER.parent
    )
    committed = 0
    for line in writer_output(slow):
        if line.startswith("committed"):
            committed = int(line.split()[1])
            if committed >= 100:
                break
    time.sleep(0.03)  # kill it at some moment of its work, not right after a commit
    os.kill(slow.pid, signal.SIGKILL)
    slow.wait()
    assert slow.returncode == -signal.SIGKILL

    with SuggestionStore.open(path) as store:
        stored = len(store)
        assert stored >= committed and stored % 20 == 0 and not store.complete
        everything = concat(store.batches(64), len(SOURCES))
    assert np.array_equal(everything.positions, np.arange(stored))
    for position in (0, stored // 2, stored - 1):
        gold, rows = document_rows(position)
        assert list(everything.gold[position].indices) == list(gold)
        for s, row in enumerate(rows):
            assert_same_rows(everything.sources[s][position], row)

    finish = subprocess.run(command, capture_output=True, text=True, cwd=WRITER.parent)
    assert finish.returncode == 0, finish.stderr
    assert finish.stdout.splitlines()[0] == f"resumed {stored}"
    assert finish.stdout.splitlines()[-1] == "complete 400"
    with SuggestionStore.open(path) as store:
        assert len(store) == 400 and store.complete
        everything = concat(store.batches(128), len(SOURCES))
    for position in (stored - 1, stored, 399):
        gold, rows = document_rows(position)
        assert list(everything.gold[position].indices) == list(gold)
        for s, row in enumerate(rows):
            assert_same_rows(everything.sources[s][position], row)
    with pytest.raises(StoreError, match="complete already"):
        open_store(str(path), 20)
    assert everything.gold.shape[1] == VOCAB_SIZE


@pytest.mark.integration
def test_a_second_writer_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "shared"
    first = open_store(str(path), 20)
    other = subprocess.run(
        [sys.executable, str(WRITER), str(path), "--documents", "40"],
        capture_output=True,
        text=True,
        cwd=WRITER.parent,
    )
    assert other.stdout.splitlines()[-1] == "complete 40", other.stderr
    gold, rows = document_rows(0)
    with pytest.raises(StoreError, match="written by another writer meanwhile"):
        for _ in range(20):
            first.append([gold], rows)
    first._close(flush=False)
    with SuggestionStore.open(path) as store:
        assert len(store) == 40 and store.complete  # the other writer's work is intact
