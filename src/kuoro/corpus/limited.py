"""``--docs-limit N`` for the commands that hand corpus paths on (train, learn, hyperopt): the
first N documents of the corpora, as a corpus of their own."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

from kuoro.corpus.documents import Corpus
from kuoro.util.wording import plural
from kuoro.vocab.vocabulary import Vocabulary

log = logging.getLogger("kuoro")


@contextmanager
def first_documents(
    paths: Sequence[Path], limit: int | None, vocabulary: Vocabulary, language: str
) -> Iterator[list[Path]]:
    """``paths`` as they are when ``limit`` is None; else one JSON lines corpus of their first
    ``limit`` documents (text, subjects by URI, document id and metadata, as read), in a
    temporary folder removed when the block ends.

    The same documents give the same file, so a fusion project's store of them is reused
    like any other (stores know a corpus by its content). The file's name says what it is, and
    is what the model's manifest records as its training corpus.
    """
    if limit is None:
        yield list(paths)
        return
    corpus = Corpus(list(paths), vocabulary, language=language)
    more = f"-and-{len(paths) - 1}-more" if len(paths) > 1 else ""
    with tempfile.TemporaryDirectory(prefix="kuoro-docs-limit-") as folder:
        target = Path(folder) / f"first-{limit}-of-{paths[0].name}{more}.jsonl"
        written = 0
        with target.open("w", encoding="utf-8") as out:
            for document in islice(corpus, limit):
                record: dict[str, object] = {
                    "text": document.text,
                    "subjects": [{"uri": vocabulary.uri(i)} for i in document.subjects],
                }
                if document.document_id is not None:
                    record["document_id"] = document.document_id
                if document.metadata:
                    record["metadata"] = dict(document.metadata)
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                written += 1
        if written == limit:  # the corpus was not read to its end, which reports on it
            names = ", ".join(map(str, paths))
            log.info("--docs-limit: the first %s of %s", plural(written, "document"), names)
            report = corpus.report
            if report.skipped or report.unknown_subjects:
                first = plural(limit, "document")
                log.warning("%s (the first %s): %s", names, first, report.summary())
        yield [target]
