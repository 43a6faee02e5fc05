"""The annif source against a real Annif server, and its failure handling against a stub."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from kuoro.analyzers import make_analyzer
from kuoro.corpus.documents import Corpus
from kuoro.errors import ModelError, SourceError
from kuoro.project.model_files import read_model, write_model
from kuoro.sources.annif import AnnifSource
from kuoro.vocab.formats import read_vocabulary
from kuoro.vocab.vocabulary import Vocabulary

from support.data import SHARED_DATA, requires_shared_data

if TYPE_CHECKING:
    from support.annif_server import AnnifServer

# The session fixture `annif_server` (installs Annif once per machine, then runs it). Imported
# only as a plugin, so that pytest rewrites its asserts.
pytest_plugins = ["support.annif_server"]

ARCH = SHARED_DATA / "archaeology"


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AnnifSource, "backoff_s", 0.01)


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return read_vocabulary(ARCH / "yso-archaeology.ttl", "fi")


@pytest.fixture(scope="module")
def documents(vocab: Vocabulary) -> list[tuple[str, tuple[int, ...]]]:
    return [(d.text, d.subjects) for d in islice(Corpus(ARCH / "documents.tsv", vocab), 80)]


def make(
    vocab: Vocabulary, endpoint: str, project: str = "arch-tfidf", **params: Any
) -> AnnifSource:
    return AnnifSource(vocab, make_analyzer("simple"), endpoint=endpoint, project=project, **params)


# -- against the real Annif server -------------------------------------------------------------


@requires_shared_data
@pytest.mark.integration
def test_suggestions_map_to_the_right_concepts(annif_server: AnnifServer, vocab, documents):
    texts = [text for text, _ in documents[:10]]
    with make(vocab, annif_server.base_url, top_k=5) as source:
        result = source.suggest(texts)
    assert result.shape == (10, len(vocab)) and result.dtype == np.float32
    for row, text in enumerate(texts):
        answer = httpx.post(
            f"{annif_server.base_url}/projects/arch-tfidf/suggest",
            data={"text": text, "limit": 5},
        ).json()["results"]
        expected = {vocab.id_of(r["uri"]): r["score"] for r in answer}
        got = dict(zip(result[row].indices.tolist(), result[row].data.tolist(), strict=True))
        assert got.keys() == expected.keys()
        assert list(got.values()) == pytest.approx([expected[c] for c in got], rel=1e-6)


@requires_shared_data
@pytest.mark.integration
def test_the_gold_subject_ranks_high(annif_server: AnnifServer, vocab, documents):
    # Annif's TF-IDF project was trained on these documents; the point is the id mapping.
    with make(vocab, annif_server.base_url, top_k=3) as source:
        result = source.suggest([text for text, _ in documents])
    hits = sum(bool(set(result[i].indices) & set(gold)) for i, (_, gold) in enumerate(documents))
    assert hits / len(documents) >= 0.8  # measured: 0.95


@requires_shared_data
@pytest.mark.integration
def test_more_than_32_documents_are_sent_in_batches(annif_server, vocab, documents, monkeypatch):
    texts = [text for text, _ in documents[:70]]
    texts[5] = texts[40] = "  "  # empty texts are not sent and get empty rows
    sizes: list[int] = []
    original = AnnifSource._suggest_batch

    def counting(self: AnnifSource, docs: list[dict[str, str]]) -> list[list[Any]]:
        sizes.append(len(docs))
        return original(self, docs)

    monkeypatch.setattr(AnnifSource, "_suggest_batch", counting)
    with make(vocab, annif_server.base_url, top_k=10) as source:
        batched = source.suggest(texts, [f"doc{i}" for i in range(70)])
    assert sizes == [32, 32, 4]
    sizes.clear()
    with make(vocab, annif_server.base_url, top_k=10, batch_size=7) as source:
        small = source.suggest(texts)
    assert sizes == [7] * 9 + [5]
    assert (batched != small).nnz == 0
    counts = np.diff(batched.indptr)
    assert counts[5] == counts[40] == 0
    assert (np.delete(counts, [5, 40]) > 0).all()


@requires_shared_data
@pytest.mark.integration
def test_limit_is_respected(annif_server, vocab, documents):
    texts = [text for text, _ in documents[:20]]
    with make(vocab, annif_server.base_url, top_k=50) as source:
        wide = source.suggest(texts)
    with make(vocab, annif_server.base_url, top_k=3) as source:
        narrow = source.suggest(texts)
    assert np.diff(narrow.indptr).max() == 3
    assert np.diff(wide.indptr).max() > 3
    for row in range(len(texts)):
        best = np.argsort(-wide[row].toarray().ravel(), kind="stable")[:3]
        assert set(narrow[row].indices) == set(best[wide[row].toarray().ravel()[best] > 0])
    assert narrow.data.min() > 0 and narrow.data.max() <= 1


@requires_shared_data
@pytest.mark.integration
def test_fit_checks_the_project_and_state_round_trips(annif_server, vocab, documents, tmp_path):
    source = make(vocab, annif_server.base_url)
    assert not AnnifSource.needs_training
    assert source.fit([]) is source
    assert source.modification_time_  # Annif reports when the project was trained
    write_model(tmp_path / "proj", {"backend": "annif"}, source.save_state)
    version_dir, _ = read_model(tmp_path / "proj", "proj")
    loaded = make(vocab, annif_server.base_url)
    loaded.load_state(version_dir)
    assert loaded.modification_time_ == source.modification_time_
    texts = [text for text, _ in documents[:5]]
    assert (source.suggest(texts) != loaded.suggest(texts)).nnz == 0
    source.close()
    loaded.close()
    (version_dir / "annif-source.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(ModelError, match=r"model file .*annif-source\.json is damaged"):
        make(vocab, annif_server.base_url).load_state(version_dir)


@requires_shared_data
@pytest.mark.integration
def test_unknown_project_is_named(annif_server, vocab):
    url = annif_server.base_url
    expected = rf"project 'nope' does not exist on {url}; its public projects: arch-dummy, "
    with pytest.raises(SourceError, match=expected):
        make(vocab, url, project="nope").fit([])
    with pytest.raises(SourceError, match=expected):
        make(vocab, url, project="nope").suggest(["kivikausi"])
    with pytest.raises(SourceError, match="or it is not the API's base URL"):
        make(vocab, url.removesuffix("/v1"), project="nope").suggest(["kivikausi"])


@requires_shared_data
@pytest.mark.integration
def test_untrained_project_is_a_clear_error(annif_server, vocab, caplog):
    source = make(vocab, annif_server.base_url, project="arch-untrained")
    with caplog.at_level(logging.WARNING, logger="kuoro.sources.annif"):
        source.fit([])
    assert "is not trained yet" in caplog.text
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"not ready, probably not trained .*not trained"):
        source.suggest(["kivikausi"])
    assert time.monotonic() - started < 5  # Annif's own 503 answer is not retried


@requires_shared_data
@pytest.mark.integration
def test_unknown_uris_are_dropped_and_reported_once(annif_server, vocab, documents, caplog):
    # A vocabulary that lacks half of the server's concepts.
    half = Vocabulary("half", vocab.uris[::2], {"fi": [""] * len(vocab.uris[::2])})
    texts = [text for text, _ in documents[:40]]
    with (
        caplog.at_level(logging.WARNING, logger="kuoro.sources.annif"),
        make(half, annif_server.base_url, top_k=10) as source,
    ):
        result = source.suggest(texts)
    assert result.shape == (40, len(half)) and result.nnz > 0
    assert len(caplog.records) == 1
    assert "are not in vocabulary 'half' and were dropped" in caplog.text


@requires_shared_data
@pytest.mark.integration
def test_stopped_server_cannot_be_reached(annif_server, vocab):
    url = annif_server.base_url
    annif_server.stop()
    try:
        with pytest.raises(SourceError, match=rf"cannot reach Annif-compatible service at {url}"):
            make(vocab, url, retries=1).suggest(["kivikausi"])
    finally:
        annif_server.start()


# -- failures, against a stub server ----------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0


class Stub:
    """A local HTTP server that answers with a script of replies (the last one repeats)."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[str, str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self._answer(json.loads(self.rfile.read(length) or b"null"))

            def _answer(self, body: Any = None) -> None:
                stub.requests.append((self.command, self.path, body))
                reply = stub.replies.pop(0) if len(stub.replies) > 1 else stub.replies[0]
                time.sleep(reply.delay)
                if callable(reply.body):
                    payload = json.dumps(reply.body(body)).encode()
                elif isinstance(reply.body, bytes):
                    payload = reply.body
                else:
                    payload = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> Stub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


TINY_URIS = [f"http://example.org/c{i}" for i in range(4)]
TINY = Vocabulary("tiny", TINY_URIS, {"en": ["a", "b", "c", "d"]})


def echo(body: Any) -> list[dict[str, Any]]:
    """A suggest-batch answer: every document gets concept 0 (0.5) and concept 1 (1.5)."""
    return [
        {
            "document_id": d["document_id"],
            "results": [
                {"uri": TINY_URIS[0], "score": 0.5},
                {"uri": TINY_URIS[1], "score": 1.5},
                {"uri": TINY_URIS[2], "score": -0.2},
                {"uri": "http://example.org/unknown", "score": 0.9},
                {"uri": TINY_URIS[3], "score": "not a number"},
            ],
        }
        for d in body["documents"]
    ]


def test_scores_are_clipped_and_bad_results_dropped():
    with Stub(Reply(body=echo)) as stub, make(TINY, stub.url, project="p") as source:
        result = source.suggest(["one", "", "two"], ["a", "b", None])
    assert result.toarray().tolist() == [[0.5, 1.0, 0, 0], [0, 0, 0, 0], [0.5, 1.0, 0, 0]]
    ((method, path, body),) = stub.requests
    assert (method, path) == ("POST", "/v1/projects/p/suggest-batch?limit=100")
    assert body == {
        "documents": [{"text": "one", "document_id": "a"}, {"text": "two", "document_id": "2"}]
    }


def test_server_errors_and_rate_limits_are_retried():
    replies = (
        Reply(500, {"detail": "boom"}),
        Reply(429, {}, (("Retry-After", "0"),)),
        Reply(body=echo),
    )
    with Stub(*replies) as stub, make(TINY, stub.url, project="p", retries=2) as source:
        assert source.suggest(["one"]).nnz == 2
    assert len(stub.requests) == 3


def test_persistent_server_errors_give_up_after_the_retries():
    with (
        Stub(Reply(502, b"bad gateway")) as stub,
        make(TINY, stub.url, project="p", retries=2) as source,
        pytest.raises(SourceError, match=r"HTTP 502 Bad Gateway \(bad gateway\)"),
    ):
        source.suggest(["one"])
    assert len(stub.requests) == 3


def test_timeouts_are_retried_then_reported():
    with Stub(Reply(body=echo, delay=1.0)) as stub:
        source = make(TINY, stub.url, project="p", timeout=0.2, retries=1)
        with pytest.raises(SourceError, match=r"did not answer within 0\.2 s .*2 tries"):
            source.suggest(["one"])
        source.close()
        assert len(stub.requests) == 2


def test_closed_port_cannot_be_reached():
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    started = time.monotonic()
    with pytest.raises(
        SourceError, match=rf"cannot reach Annif-compatible service at {url}: .*3 tries"
    ):
        make(TINY, url, project="p", retries=2).suggest(["one"])
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(body=b"<html>oops</html>", headers=(("Content-Type", "text/html"),)), "not JSON"),
        (Reply(body=[{"results": []}] * 2), "not a suggest-batch answer for 1 documents"),
        (Reply(body=[{"uri": TINY_URIS[0]}]), "a document without a list of 'results'"),
        (Reply(400, {"detail": "too many items"}), r"HTTP 400 Bad Request \(too many items\)"),
    ],
)
def test_answers_that_are_not_suggestions_are_errors(reply, message):
    with Stub(reply) as stub, pytest.raises(SourceError, match=message):
        make(TINY, stub.url, project="p").suggest(["one"])


def test_required_parameters_and_no_requests_for_nothing():
    with pytest.raises(SourceError, match="'endpoint' is required"):
        AnnifSource(TINY, make_analyzer("simple"), project="p").fit([])
    with pytest.raises(SourceError, match="'project' is required"):
        AnnifSource(TINY, make_analyzer("simple"), endpoint="http://127.0.0.1:9/v1").fit([])
    # Nothing to send: no request, so no error even though nothing listens there.
    source = make(TINY, "http://127.0.0.1:9/v1", project="p", retries=0)
    assert source.suggest(["", " "]).shape == (2, 4)
    assert source.suggest([]).shape == (0, 4)
    assert source.params()["batch_size"] == 32
    with pytest.raises(SourceError, match="is not a usable URL"):
        make(TINY, "http://exa mple.org:x/v1", project="p").suggest(["one"])
