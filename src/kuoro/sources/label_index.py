"""Where a vocabulary's labels occur in analyzed text, and what each match looks like.

Every label of a concept is matched: its preferred label, its alternative labels (synonyms,
older names), its hidden labels (misspellings, forms never shown) and, in a classification,
its notation. Labels and text pass through the same analyzer, so an inflected form matches
wherever the analyzer maps it to the label's tokens; a compound word whose last part is a
one-word label (Finnish "linnanrauniot" for "rauniot") counts as a weaker match. The features
of a matched concept tell how often and where it occurs, through which kind of label, how long
and how ambiguous the label is, and whether related concepts match too.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from kuoro.analyzers import Analyzer
from kuoro.vocab.vocabulary import Vocabulary

# The kinds of label, in the order of preference when one text is a label of several kinds.
LABEL_KINDS = ("preferred", "alternative", "hidden", "notation")
PREFERRED, ALTERNATIVE, HIDDEN, NOTATION = range(len(LABEL_KINDS))

FEATURES = (
    "occurrences",  # log(1 + exact matches)
    "compound_occurrences",  # log(1 + matches as the last part of a compound word)
    "first_position",  # where the first match is, 0 = start of the text, 1 = end
    "spread",  # distance between the first and last match, as a fraction of the text
    "extra_label_tokens",  # tokens in the label beyond the first
    "ambiguity",  # log(concepts that share the matched label)
    "overlapped",  # fraction of the matches that lie inside a longer match
    "related_matches",  # log(1 + broader and narrower concepts that match too)
    "text_length",  # log(1 + tokens in the text)
    "alternative_label",  # fraction of the matches through an alternative label
    "hidden_label",  # fraction of the matches through a hidden label
    "notation_matches",  # log(1 + times the concept's notation stands in the text)
    "associated_matches",  # log(1 + skos:related concepts that match too)
    "concept_precision",  # logit of how often this concept's matches were right in training
)

_PARENTHESES = re.compile(r"\s*\([^()]*\)\s*$")
_MIN_HEAD_CHARS = 4  # shortest label that may end a compound word
_MIN_MODIFIER_CHARS = 3  # shortest first part of such a compound
# What may be a notation in running text: "84.2", "A12", "338.9/2" (at least two characters).
_NOTATION_TOKEN = re.compile(r"[0-9A-Za-z][0-9A-Za-z.:/-]*[0-9A-Za-z]")


def label_texts(
    vocabulary: Vocabulary, kinds: Sequence[str] = LABEL_KINDS
) -> Iterator[tuple[int, int, str]]:
    """(concept, kind, text) of every label of ``kinds`` of the active concepts, as it is
    matched: "kuusi (puu)" as "kuusi" (the qualifier tells senses apart; texts do not write
    it). Notations are not analyzed, so they are not among these."""
    wanted = [LABEL_KINDS.index(kind) for kind in kinds if kind != "notation"]
    for concept in range(len(vocabulary)):
        if vocabulary.deprecated[concept]:
            continue
        for kind in wanted:
            if kind == PREFERRED:
                label = vocabulary.label(concept)
                labels: Sequence[str] = () if label is None else (label,)
            elif kind == ALTERNATIVE:
                labels = vocabulary.alt_labels(concept)
            else:
                labels = vocabulary.hidden_labels(concept)
            for text in labels:
                yield concept, kind, _PARENTHESES.sub("", text) or text


class LabelIndex:
    """The vocabulary's labels of ``kinds`` as token sequences, and where they occur.

    ``analyzed`` gives labels already analyzed by this analyzer (label text → tokens, as a
    stored index holds them); only the other labels are analyzed now. :attr:`analyzed` holds
    every label's tokens afterwards and :attr:`labels_analyzed` how many were analyzed here.
    """

    def __init__(
        self,
        vocabulary: Vocabulary,
        analyzer: Analyzer,
        *,
        analyzed: Mapping[str, tuple[str, ...]] | None = None,
        kinds: Sequence[str] = LABEL_KINDS,
    ) -> None:
        known = analyzed or {}
        self.kinds = tuple(kinds)
        self.analyzed: dict[str, tuple[str, ...]] = {}
        self.labels_analyzed = 0
        # Tokens → {concept: the most preferred kind of label they are of that concept}.
        phrases: dict[tuple[str, ...], dict[int, int]] = defaultdict(dict)
        heads: dict[str, set[int]] = defaultdict(set)
        for concept, kind, label in label_texts(vocabulary, kinds):
            tokens = self.analyzed.get(label)
            if tokens is None:
                tokens = known.get(label)
            if tokens is None:
                tokens = tuple(analyzer.tokens(label))
                self.labels_analyzed += 1
            self.analyzed[label] = tokens
            if not tokens:
                continue
            found = phrases[tokens]
            found[concept] = min(found.get(concept, kind), kind)
            if len(tokens) == 1:
                # Both forms, since a compound's last part is analyzed as part of a longer word.
                for head in (tokens[0], label.lower()):
                    if len(head) >= _MIN_HEAD_CHARS and head.isalpha():
                        heads[head].add(concept)
        self.phrases = {tokens: tuple(sorted(found)) for tokens, found in phrases.items()}
        self.phrase_kinds = {
            tokens: tuple(found[c] for c in sorted(found)) for tokens, found in phrases.items()
        }
        self.heads = {head: tuple(sorted(ids)) for head, ids in heads.items()}
        lengths: dict[str, set[int]] = defaultdict(set)
        for tokens in self.phrases:
            lengths[tokens[0]].add(len(tokens))
        self.lengths = {first: tuple(sorted(n, reverse=True)) for first, n in lengths.items()}
        self.notations: dict[str, tuple[int, ...]] = {}
        if "notation" in self.kinds:
            found_notations: dict[str, list[int]] = defaultdict(list)
            for concept in range(len(vocabulary)):
                notation = vocabulary.notation(concept)
                if notation and len(notation) > 1 and not vocabulary.deprecated[concept]:
                    found_notations[notation.lower()].append(concept)
            self.notations = {k: tuple(v) for k, v in found_notations.items()}
        self.family = [
            (*vocabulary.broader(c), *vocabulary.narrower(c)) for c in range(len(vocabulary))
        ]
        self.associated = [vocabulary.related(c) for c in range(len(vocabulary))]

    def features(self, tokens: Sequence[str], text: str = "") -> tuple[list[int], np.ndarray]:
        """The matched concepts of a text's tokens (and, for notations, of its ``text``) and
        their features, the concept precision left 0."""
        n_tokens = len(tokens)
        spans: list[tuple[int, int, tuple[str, ...]]] = []
        cover = [0] * n_tokens  # longest match covering each token
        for i, token in enumerate(tokens):
            for n in self.lengths.get(token, ()):
                if i + n > n_tokens:
                    continue
                phrase = tuple(tokens[i : i + n])
                if phrase in self.phrases:
                    spans.append((i, n, phrase))
                    for j in range(i, i + n):
                        cover[j] = max(cover[j], n)
        positions: dict[int, list[int]] = defaultdict(list)
        by_kind: dict[int, list[int]] = defaultdict(lambda: [0] * len(LABEL_KINDS))
        overlapped: dict[int, int] = defaultdict(int)
        ambiguity: dict[int, int] = {}
        label_tokens: dict[int, int] = {}
        for i, n, phrase in spans:
            found, kinds = self.phrases[phrase], self.phrase_kinds[phrase]
            inside = max(cover[i : i + n]) > n
            for concept, kind in zip(found, kinds, strict=True):
                positions[concept].append(i)
                by_kind[concept][kind] += 1
                overlapped[concept] += inside
                ambiguity[concept] = max(ambiguity.get(concept, 0), len(found))
                label_tokens[concept] = max(label_tokens.get(concept, 0), n)
        compounds: dict[int, list[int]] = defaultdict(list)
        for i, token in enumerate(tokens):
            for start in range(_MIN_MODIFIER_CHARS, len(token) - _MIN_HEAD_CHARS + 1):
                heads = self.heads.get(token[start:])
                if heads is not None:
                    for concept in heads:
                        compounds[concept].append(i)
                    break  # the longest head only
        notations: dict[int, int] = defaultdict(int)
        if self.notations and text:
            for candidate in _NOTATION_TOKEN.findall(text):
                for concept in self.notations.get(candidate.lower(), ()):
                    notations[concept] += 1
        concepts = sorted(positions.keys() | compounds.keys() | notations.keys())
        if not concepts:
            return [], np.zeros((0, len(FEATURES)))
        matched = set(concepts)
        family = {c: sum(other in matched for other in self.family[c]) for c in concepts}
        associated = {c: sum(other in matched for other in self.associated[c]) for c in concepts}
        scale = max(n_tokens - 1, 1)
        rows = np.zeros((len(concepts), len(FEATURES)))
        for row, concept in zip(rows, concepts, strict=True):
            exact = positions.get(concept, [])
            where = exact or compounds.get(concept) or [0]
            row[0] = math.log1p(len(exact))
            row[1] = math.log1p(len(compounds.get(concept, ())))
            row[2] = min(where) / scale
            row[3] = (max(where) - min(where)) / scale
            row[4] = label_tokens.get(concept, 1) - 1
            row[5] = math.log(ambiguity.get(concept, 1))
            row[6] = overlapped[concept] / len(exact) if exact else 0.0
            row[7] = math.log1p(family[concept])
            row[8] = math.log1p(n_tokens)
            if exact:
                counts = by_kind[concept]
                row[9] = counts[ALTERNATIVE] / len(exact)
                row[10] = counts[HIDDEN] / len(exact)
            row[11] = math.log1p(notations.get(concept, 0))
            row[12] = math.log1p(associated[concept])
        return concepts, rows
