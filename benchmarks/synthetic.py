"""Synthetic source suggestions shaped like real ones, streamed in chunks of documents.

Usage: python benchmarks/synthetic.py --vocab-size 456000 --documents 25000 [--seed 0]

The model behind the data, per document:

* gold: 1–8 concepts (mean 4.7) drawn without repetition from a Zipf–Mandelbrot prior,
  p(r) ∝ (r + 4)^-1.1 over a random permutation of the concept ids, so that frequent concepts
  are not the low ids; at V = 36k its head and the number of distinct concepts used are close
  to kirjastonhoitaja/train (most frequent subject: 3.3% of assignments, real 2.2%);
* a shared pool of wrong candidates: neighbours of the gold concepts in a hidden "semantic"
  order of the vocabulary (related concepts, which every source confuses) and frequent
  concepts drawn from the prior; each has a relevance shared by all sources;
* each gold concept has a findability shared by all sources; a source lists it in its top-K
  when findability plus its own noise passes the source's threshold, so the union of four
  sources finds about 73% of the gold and a single source 37–52% (as on the real protocol);
* each source ranks the gold it found and (shared pool + a few candidates of its own) by
  (shared latent + its own noise), keeps its top K, and maps that onto (0, 1] with its own
  score shape (like omikuji, tf-idf, fastText and a lexical source that lists fewer).

Data is generated in fixed blocks of documents, each from its own seed
(``SeedSequence(seed, spawn_key=(block,))``), so a document's rows depend only on the seed
and its position: not on ``chunk_size`` nor on ``n_documents``. Memory is
O(chunk × K × sources + V) whatever the number of documents.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import scipy.sparse as sp

BLOCK = 256  # documents per seeded block; fixed so that chunking never changes the data
ZIPF_EXPONENT = 1.1
ZIPF_SHIFT = 4.0  # flattens the head like real subject frequencies (Zipf–Mandelbrot)
MAX_GOLD = 8
GOLD_DRAWS = 16  # prior draws per document from which up to MAX_GOLD distinct ones are kept
NEIGHBOUR_SPAN = 40  # how far in the semantic order a related concept may lie

# Per source profile, cycled when there are more than four sources: the share of gold it
# finds (before truncation), and its score shape cap * sigmoid(slope * logit + shift).
RECALL = (0.52, 0.48, 0.44, 0.42)
SLOPE = (1.0, 0.8, 1.6, 1.2)
SHIFT = (0.0, -1.2, -1.0, 0.3)
CAP = (1.0, 0.6, 1.0, 1.0)
VARIABLE_LENGTH = (False, False, False, True)  # a lexical source lists only what it matched
FINDABILITY = 1.3  # weight of the shared findability: sets how much the sources overlap
NOISE = 1.0  # weight of a source's own noise against the shared latent: sets shared candidates


@dataclass(frozen=True)
class _Vocabulary:
    """The O(V) state shared by all blocks: the prior and the hidden semantic order."""

    cdf: np.ndarray  # (V,) float64 cumulative prior over frequency ranks
    by_rank: np.ndarray  # (V,) int32 concept id of each frequency rank
    semantic_position: np.ndarray  # (V,) int32 position of each concept in the semantic order
    by_position: np.ndarray  # (V,) int32 concept at each semantic position

    @classmethod
    def create(cls, vocab_size: int, seed: int) -> _Vocabulary:
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        weights = (np.arange(1, vocab_size + 1, dtype=np.float64) + ZIPF_SHIFT) ** -ZIPF_EXPONENT
        by_position = rng.permutation(vocab_size).astype(np.int32)
        semantic_position = np.empty(vocab_size, np.int32)
        semantic_position[by_position] = np.arange(vocab_size, dtype=np.int32)
        return cls(
            cdf=np.cumsum(weights / weights.sum()),
            by_rank=rng.permutation(vocab_size).astype(np.int32),
            semantic_position=semantic_position,
            by_position=by_position,
        )

    @property
    def size(self) -> int:
        return len(self.cdf)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Concept ids drawn from the Zipf prior."""
        rank = np.searchsorted(self.cdf, rng.random(shape) * self.cdf[-1], side="right")
        return np.asarray(self.by_rank[np.minimum(rank, self.size - 1)], dtype=np.int64)

    def neighbours(self, concepts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A related concept of each given one: a few steps away in the semantic order."""
        step = rng.integers(1, NEIGHBOUR_SPAN + 1, concepts.shape) * rng.choice(
            [-1, 1], concepts.shape
        )
        position = (self.semantic_position[concepts].astype(np.int64) + step) % self.size
        return np.asarray(self.by_position[position], dtype=np.int64)


def _first_occurrences(ids: np.ndarray) -> np.ndarray:
    """Mask of each row's entries whose id did not occur earlier in the row."""
    width = ids.shape[1]
    # Position as the minor key puts each id's first occurrence first among its repeats.
    order = np.argsort(ids * width + np.arange(width), axis=1)
    ordered = np.take_along_axis(ids, order, axis=1)
    repeated = np.zeros_like(ordered, dtype=bool)
    repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    first = np.empty_like(repeated)
    np.put_along_axis(first, order, ~repeated, axis=1)
    return first


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _rows_to_csr(
    ids: np.ndarray, scores: np.ndarray, keep: np.ndarray, n_cols: int
) -> sp.csr_matrix:
    """One CSR from (rows × width) candidate ids and scores, keeping ``keep``, ids sorted."""
    order = np.argsort(np.where(keep, ids, n_cols), axis=1)
    ids = np.take_along_axis(ids, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    keep = np.take_along_axis(keep, order, axis=1)
    indptr = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    return sp.csr_matrix(
        (scores[keep].astype(np.float32), ids[keep].astype(np.int32), indptr),
        shape=(len(ids), n_cols),
    )


def _block(
    vocab: _Vocabulary, block: int, seed: int, n_sources: int, top_k: int
) -> tuple[list[np.ndarray], list[sp.csr_matrix]]:
    """Gold ids and one CSR per source for the BLOCK documents of one block."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block,)))
    n, v = BLOCK, vocab.size

    # Gold: distinct prior draws, a random subset of the wanted size.
    draws = vocab.draw(rng, (n, GOLD_DRAWS))
    pick = np.where(_first_occurrences(draws), rng.random(draws.shape), 2.0)
    order = np.argsort(pick, axis=1)[:, :MAX_GOLD]
    gold = np.take_along_axis(draws, order, axis=1)
    n_distinct = (np.take_along_axis(pick, order, axis=1) < 2.0).sum(axis=1)
    n_gold = np.minimum(1 + rng.binomial(MAX_GOLD - 1, 0.53, n), n_distinct)
    is_gold = np.arange(MAX_GOLD) < n_gold[:, None]

    # The shared pool of wrong candidates: related concepts and frequent ones.
    pool_size = 2 * top_k + 20
    n_related = int(0.55 * pool_size)
    anchor = np.minimum((rng.random((n, n_related)) * n_gold[:, None]).astype(np.int64), 7)
    related = vocab.neighbours(np.take_along_axis(gold, anchor, axis=1), rng)
    frequent = vocab.draw(rng, (n, pool_size - n_related))
    own_size = max(top_k // 2, 1)
    own = vocab.draw(rng, (n, n_sources * own_size))

    ids = np.concatenate([np.where(is_gold, gold, v), related, frequent, own], axis=1)
    width = ids.shape[1]
    usable = _first_occurrences(ids) & (ids < v)
    # Shared latents: findability of gold, relevance of wrong candidates (related ones more).
    latent = rng.standard_normal((n, width))
    latent[:, MAX_GOLD : MAX_GOLD + n_related] += 0.5
    kind = np.zeros(width, np.int8)  # 0 gold, 1 shared wrong candidate, 2 a source's own
    kind[MAX_GOLD : MAX_GOLD + pool_size] = 1
    kind[MAX_GOLD + pool_size :] = 2
    owner = np.full(width, -1)
    owner[MAX_GOLD + pool_size :] = np.repeat(np.arange(n_sources), own_size)

    gold_sorted = np.sort(np.where(is_gold, gold, v), axis=1)[is_gold].astype(np.int32)
    golds = np.split(gold_sorted, np.cumsum(n_gold)[:-1])
    rows = []
    for s in range(n_sources):
        p = s % len(RECALL)
        noise = rng.standard_normal((n, width))
        # Found gold: shared findability + own noise over the threshold that gives RECALL[p].
        spread = np.sqrt(FINDABILITY**2 + 1.0)
        threshold = spread * NormalDist().inv_cdf(1.0 - RECALL[p])
        found = is_gold & (FINDABILITY * latent[:, :MAX_GOLD] + noise[:, :MAX_GOLD] > threshold)
        logit = np.where(kind == 0, 1.5, -1.5) + latent + NOISE * noise
        eligible = usable & ((kind == 1) | (owner == s))
        eligible[:, :MAX_GOLD] = found & usable[:, :MAX_GOLD]
        # A found gold concept is listed whatever its score; the rest compete on the logit.
        priority = np.where(eligible, logit + np.where(kind == 0, 1e3, 0.0), -np.inf)
        k = min(top_k, width)
        top = np.argpartition(-priority, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(priority, top, 1), 1), 1)
        keep = np.isfinite(np.take_along_axis(priority, top, axis=1))
        if VARIABLE_LENGTH[p]:
            length = np.minimum(np.exp(rng.normal(3.3, 0.8, n)).astype(np.int64), top_k)
            length[rng.random(n) < 0.02] = 0  # now and then a source has nothing to say
            keep &= np.arange(k) < length[:, None]
        score = CAP[p] * _sigmoid(SLOPE[p] * np.take_along_axis(logit, top, axis=1) + SHIFT[p])
        score = np.clip(score, 1e-4, 1.0)
        rows.append(_rows_to_csr(np.take_along_axis(ids, top, axis=1), score, keep, v))
    return golds, rows


def generate(
    vocab_size: int,
    n_documents: int,
    *,
    n_sources: int = 4,
    top_k: int = 100,
    seed: int = 0,
    chunk_size: int = 1000,
) -> Iterator[tuple[list[np.ndarray], list[sp.csr_matrix]]]:
    """Yield chunks: (gold concept ids per document, one CSR (chunk × V) per source)."""
    if vocab_size < 1 or n_documents < 0 or n_sources < 1 or top_k < 1 or chunk_size < 1:
        raise ValueError("vocab_size, n_sources, top_k, chunk_size must be > 0, n_documents >= 0")
    vocab = _Vocabulary.create(vocab_size, seed)
    gold: list[np.ndarray] = []
    pending: list[list[sp.csr_matrix]] = [[] for _ in range(n_sources)]
    n_blocks = -(-n_documents // BLOCK)
    for block in range(n_blocks):
        block_gold, block_rows = _block(vocab, block, seed, n_sources, top_k)
        wanted = min(BLOCK, n_documents - block * BLOCK)
        gold.extend(block_gold[:wanted])
        for s, rows in enumerate(block_rows):
            pending[s].append(rows[:wanted])
        last = block == n_blocks - 1
        if len(gold) < chunk_size and not last:
            continue
        stacked = [sp.vstack(parts, format="csr") for parts in pending]
        start = 0
        while len(gold) - start >= chunk_size or (last and start < len(gold)):
            end = min(start + chunk_size, len(gold))
            yield gold[start:end], [m[start:end] for m in stacked]
            start = end
        gold = gold[start:]
        pending = [[m[start:]] for m in stacked]


def summary(
    vocab_size: int, n_documents: int, *, n_sources: int = 4, top_k: int = 100, seed: int = 0
) -> dict[str, float | list[float]]:
    """Streamed statistics: gold per document, recall of each source and of the union."""
    start = time.perf_counter()
    n_gold = union_hits = pairs = candidates = 0
    hits = np.zeros(n_sources)
    for gold, sources in generate(
        vocab_size, n_documents, n_sources=n_sources, top_k=top_k, seed=seed
    ):
        rows = np.repeat(np.arange(len(gold)), [len(g) for g in gold])
        gold_keys = rows * vocab_size + np.concatenate(gold).astype(np.int64)
        keys = []
        for s, m in enumerate(sources):
            k = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr)) * vocab_size + m.indices
            hits[s] += np.isin(gold_keys, k).sum()
            keys.append(k)
            pairs += m.nnz
        union = np.unique(np.concatenate(keys))
        candidates += len(union)
        union_hits += int(np.isin(gold_keys, union).sum())
        n_gold += len(gold_keys)
    seconds = time.perf_counter() - start
    return {
        "gold_per_document": n_gold / max(n_documents, 1),
        "union_recall": union_hits / max(n_gold, 1),
        "source_recall": [float(h) / max(n_gold, 1) for h in hits],
        "pairs_per_document": pairs / max(n_documents, 1),
        "candidates_per_document": candidates / max(n_documents, 1),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=36_000)
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    stats = summary(
        args.vocab_size, args.documents, n_sources=args.sources, top_k=args.top_k, seed=args.seed
    )
    recalls = ", ".join(f"{r:.3f}" for r in stats["source_recall"])  # type: ignore[union-attr]
    print(f"documents: {args.documents:,}  vocabulary: {args.vocab_size:,}  seed: {args.seed}")
    print(f"gold per document: {stats['gold_per_document']:.2f}")
    print(f"recall@{args.top_k} per source: {recalls}")
    print(f"recall of the union: {stats['union_recall']:.3f}")
    print(f"(source, candidate) pairs per document: {stats['pairs_per_document']:.1f}")
    print(f"candidates (union) per document: {stats['candidates_per_document']:.1f}")
    seconds = float(stats["seconds"])  # type: ignore[arg-type]
    print(f"time: {seconds:.2f} s ({args.documents / seconds:,.0f} documents/s)")


if __name__ == "__main__":
    main()
