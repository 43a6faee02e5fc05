"""Vocabularies: every file format on the real data, compact storage, stable ids, bad input."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import kuoro
from kuoro.errors import KuoroError, NotFoundError, VocabularyError
from kuoro.project.datadir import DataDir
from kuoro.vocab.formats import read_vocabulary
from kuoro.vocab.vocabulary import Vocabulary

from support.data import SHARED_DATA, requires_shared_data
from support.vocab_files import write_like_old_kuoro

ARCH = SHARED_DATA / "archaeology"
YSO = "http://www.yso.fi/onto/yso/"
SKOS = "http://www.w3.org/2004/02/skos/core#"


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


@requires_shared_data
class TestRealFormats:
    def test_skos_turtle_and_rdfxml_agree(self) -> None:
        ttl = read_vocabulary(ARCH / "yso-archaeology.ttl", "fi")
        rdf = read_vocabulary(ARCH / "yso-archaeology.rdf", "fi")
        assert len(ttl) == len(rdf) == 130
        assert ttl.fingerprint == rdf.fingerprint
        assert ttl.languages[0] == "fi" and set(ttl.languages) == {"fi", "sv", "en"}
        i = ttl.id_of(f"<{YSO}p10073>")
        assert i is not None
        assert ttl.label(i) == "mykeneläinen kulttuuri"
        assert ttl.label(i, "en") == "Mycenaean culture"
        assert [ttl.uri(b) for b in ttl.broader(i)] == [rdf.uri(b) for b in rdf.broader(i)]
        assert ttl.broader(i), "SKOS broader links are kept"
        assert sum(1 for c in range(len(ttl)) if ttl.broader(c)) > 40

    def test_skos_default_language_is_first_sorted(self) -> None:
        vocab = read_vocabulary(ARCH / "yso-archaeology.ttl")
        assert vocab.languages == ("en", "fi", "sv")

    def test_tsv_csv_and_bom(self) -> None:
        tsv = read_vocabulary(ARCH / "subjects.tsv", "fi")
        csv = read_vocabulary(ARCH / "subjects.csv")
        bom = read_vocabulary(ARCH / "subjects-bom.tsv", "fi")
        assert len(tsv) == len(csv) == 125
        assert tsv.fingerprint == csv.fingerprint
        assert all(tsv.label(i) == csv.label(i) for i in range(len(tsv)))
        assert bom.uri(0) == f"{YSO}p10073", "the byte-order mark is not part of the URI"
        assert tsv.id_of_label("rahalöydöt") == tsv.id_of(f"{YSO}p10415")

    def test_yso_finnish(self) -> None:
        vocab = read_vocabulary(SHARED_DATA / "yso-fi" / "vocab.tsv", "fi", name="yso-fi")
        assert len(vocab) == vocab.active_count == 35_999
        assert vocab.label(0) == "perestroika"
        assert vocab.id_of(f"<{YSO}p24412>") == 0
        assert vocab.id_of(f"{YSO}no-such") is None


class TestFormatsOnSmallFiles:
    def test_tsv_bare_uris_and_notation(self, tmp_path: Path) -> None:
        path = write(tmp_path / "v.tsv", "http://ex/a\talpha\t1.2\n<http://ex/b>\tbeta\n\n")
        vocab = read_vocabulary(path, "en")
        assert vocab.uris == ["http://ex/a", "http://ex/b"]
        assert vocab.notation(0) == "1.2" and vocab.notation(1) is None
        assert vocab.label(1, "en") == "beta"

    def test_csv_row_without_labels_is_deprecated(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "v.csv",
            "uri,notation,label_fi,label_sv\nhttp://ex/a,,a,a_sv\nhttp://ex/b,,,\n",
        )
        vocab = read_vocabulary(path)
        assert vocab.deprecated.tolist() == [False, True]
        assert vocab.languages == ("fi", "sv")
        assert vocab.id_of_label("a_sv", "sv") == 0

    def test_skos_deprecated_concept(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "v.ttl",
            "@prefix skos: <http://www.w3.org/2004/02/skos/core#> .\n"
            "@prefix owl: <http://www.w3.org/2002/07/owl#> .\n"
            '<http://ex/a> a skos:Concept ; skos:prefLabel "a"@en ; skos:notation "A1" .\n'
            '<http://ex/b> a skos:Concept ; skos:prefLabel "b"@en ; owl:deprecated true ;'
            " skos:broader <http://ex/a> .\n",
        )
        vocab = read_vocabulary(path)
        assert vocab.deprecated.tolist() == [False, True]
        assert vocab.notation(0) == "A1"
        assert vocab.broader(1) == (0,)
        assert vocab.id_of_label("b") is None, "deprecated concepts are not matched by label"

    @pytest.mark.parametrize(
        ("name", "content", "language", "message"),
        [
            ("v.tsv", "http://ex/a alpha\n", "fi", r"v\.tsv:1: expected '<uri>\\tlabel'"),
            ("v.tsv", "http://ex/a\talpha\n", None, r"names no language.*--language"),
            ("v.tsv", b"http://ex/a\talpha\n\xff\xfe\tx\n", "fi", r"v\.tsv:2: invalid UTF-8"),
            ("v.tsv", "\n\n", "fi", r"no concepts found"),
            ("v.csv", "id,label\nx,y\n", None, r"needs a 'uri' column"),
            ("v.ttl", "this is not turtle", None, r"cannot parse as turtle"),
            ("v.ttl", "<http://ex/a> <http://ex/p> <http://ex/b> .\n", None, r"no skos:Concept"),
        ],
    )
    def test_bad_input(
        self, tmp_path: Path, name: str, content: str | bytes, language: str | None, message: str
    ) -> None:
        path = write(tmp_path / name, content)
        with pytest.raises(VocabularyError, match=message):
            read_vocabulary(path, language)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(VocabularyError, match=r"nope\.tsv: no such file"):
            read_vocabulary(tmp_path / "nope.tsv", "fi")


def small_vocab(uris: list[str], name: str = "v") -> Vocabulary:
    return Vocabulary(name, uris, {"en": [u.rsplit("/", 1)[-1].upper() for u in uris]})


class TestStorage:
    def test_round_trip_is_exact(self, tmp_path: Path) -> None:
        vocab = Vocabulary(
            "v",
            ["http://ex/a", "http://ex/b", "http://ex/c"],
            {"fi": ["ä", None, "c"], "sv": ["a", "b", ""]},
            notations=["1", None, "3"],
            deprecated=[False, True, False],
            broader=[[], [0], [0, 1]],
        )
        vocab.save(tmp_path / "v.npz")
        again = Vocabulary.load(tmp_path / "v.npz")
        assert again.name == "v" and again.languages == ("fi", "sv")
        assert list(again.uris) == list(vocab.uris)
        assert [again.label(i) for i in range(3)] == ["ä", None, "c"]
        assert [again.notation(i) for i in range(3)] == ["1", None, "3"]
        assert again.deprecated.tolist() == [False, True, False]
        assert [again.broader(i) for i in range(3)] == [(), (0,), (0, 1)]
        assert again.fingerprint == vocab.fingerprint

    def test_one_concept_with_empty_columns(self, tmp_path: Path) -> None:
        Vocabulary("v", ["http://ex/a"], {"en": [None]}).save(tmp_path / "v.npz")
        again = Vocabulary.load(tmp_path / "v.npz")
        assert len(again) == 1 and again.label(0) is None and again.notation(0) is None

    def test_damaged_file(self, tmp_path: Path) -> None:
        small_vocab(["http://ex/a"]).save(tmp_path / "v.npz")
        data = (tmp_path / "v.npz").read_bytes()
        (tmp_path / "v.npz").write_bytes(data[: len(data) // 2])
        with pytest.raises(VocabularyError, match="damaged vocabulary file"):
            Vocabulary.load(tmp_path / "v.npz")

    def test_not_a_pickle_reader(self, tmp_path: Path) -> None:
        np.savez(tmp_path / "evil.npz", meta=np.array([object()], dtype=object))
        with pytest.raises(VocabularyError, match="damaged vocabulary file"):
            Vocabulary.load(tmp_path / "evil.npz")

    def test_update_keeps_ids_stable(self) -> None:
        old = small_vocab(["http://ex/a", "http://ex/b", "http://ex/c"])
        new = Vocabulary(
            "v",
            ["http://ex/d", "http://ex/c", "http://ex/a"],
            {"en": ["D", "C2", "A"]},
            broader=[[1], [], [1]],
        )
        merged = old.updated_with(new)
        assert list(merged.uris) == ["http://ex/a", "http://ex/b", "http://ex/c", "http://ex/d"]
        assert merged.deprecated.tolist() == [False, True, False, False]
        assert merged.label(2) == "C2", "labels come from the newer version"
        assert merged.label(1) == "B", "a removed concept keeps its last label"
        assert merged.broader(3) == (2,) and merged.broader(0) == (2,)
        assert merged.id_of_label("B") is None

    def test_duplicate_uris_rejected(self) -> None:
        with pytest.raises(VocabularyError, match="same URI more than once"):
            small_vocab(["http://ex/a", "http://ex/a"])

    def test_unknown_language(self) -> None:
        with pytest.raises(VocabularyError, match="no labels in language 'de'; it has: en"):
            small_vocab(["http://ex/a"]).label(0, "de")


class TestDataDir:
    def test_store_then_update(self, tmp_path: Path) -> None:
        datadir = DataDir(tmp_path)
        _, first = datadir.store_vocabulary(small_vocab(["http://ex/a", "http://ex/b"]))
        assert first.replaced_existing is False and first.added == 2
        merged, update = datadir.store_vocabulary(small_vocab(["http://ex/c", "http://ex/a"]))
        assert (update.added, update.deprecated, update.kept) == (1, 1, 1)
        assert datadir.load_vocabulary("v").id_of("http://ex/c") == 2
        assert datadir.vocabulary_names() == ["v"]
        assert merged.fingerprint == datadir.load_vocabulary("v").fingerprint

    def test_missing_vocabulary_names_the_fix(self, tmp_path: Path) -> None:
        with pytest.raises(NotFoundError, match=r"'yso' is not loaded.*kuoro load-vocab yso FILE"):
            DataDir(tmp_path).load_vocabulary("yso")

    def test_names_are_checked(self, tmp_path: Path) -> None:
        with pytest.raises(KuoroError, match=r"invalid vocabulary name '\.\./x'"):
            DataDir(tmp_path).vocab_path("../x")


# -- control characters (a stored vocabulary must always read back) ---------------------------

SKOS_PREFIX = "@prefix skos: <http://www.w3.org/2004/02/skos/core#> .\n"


class TestControlCharacters:
    @pytest.mark.parametrize(
        ("name", "content", "message"),
        [
            # A URI or notation with a control character names the file and line.
            ("v.tsv", "<http://ex/a>\tA\n<http://ex/b\rc>\tB\n", r"v\.tsv:2: the URI .*U\+000D"),
            ("v.tsv", "<http://ex/a>\tA\t1\x0b2\n", r"v\.tsv:1: the notation '1\\x0b2'"),
            (
                "v.csv",
                'uri,label_en\nhttp://ex/a,A\n"http://ex/b\nc",B\n',
                r"v\.csv:3: the URI 'http://ex/b\\nc' holds a control character \(U\+000A\)",
            ),
            (
                "v.csv",
                'uri,label_en,notation\nhttp://ex/a,A,"1\n2"\n',
                r"v\.csv:2: the notation '1\\n2'",
            ),
            (
                "v.ttl",
                SKOS_PREFIX + '<http://ex/a\\u000Ab> a skos:Concept ; skos:prefLabel "A"@en .\n',
                r"v\.ttl:2: the URI 'http://ex/a\\nb' holds a control character \(U\+000A\)",
            ),
            (
                "v.ttl",
                SKOS_PREFIX + "<http://ex/a> a skos:Concept .\n\n"
                '<http://ex/a> skos:notation "1\\n2" .\n',
                r"v\.ttl:2: concept 'http://ex/a': the notation '1\\n2'",
            ),
            (
                "v.rdf",
                '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"\n'
                ' xmlns:skos="http://www.w3.org/2004/02/skos/core#">\n'
                '<skos:Concept rdf:about="http://ex/a&#10;b"/>\n</rdf:RDF>\n',
                r"v\.rdf:3: the URI 'http://ex/a\\nb'",
            ),
        ],
    )
    def test_uri_or_notation_with_a_control_character_is_refused(
        self, tmp_path: Path, name: str, content: str, message: str
    ) -> None:
        path = write(tmp_path / name, content)
        with pytest.raises(VocabularyError, match=message):
            read_vocabulary(path, "en")

    def test_labels_become_one_line(self, tmp_path: Path) -> None:
        """Labels are display text: line breaks, tabs and control characters become spaces."""
        ttl = write(
            tmp_path / "v.ttl",
            SKOS_PREFIX
            + '<http://ex/a> a skos:Concept ; skos:prefLabel "a\\nb\\tc\\u0001d\\r"@en .',
        )
        csv = write(tmp_path / "v.csv", 'uri,label_en\nhttp://ex/a,"a\nb\u2028c"\n')
        tsv = write(tmp_path / "v.tsv", "http://ex/a\ta\x0cb\x85c\n")
        assert read_vocabulary(ttl).label(0) == "a b c d"
        assert read_vocabulary(csv).label(0) == "a b c"
        assert read_vocabulary(tsv, "en").label(0) == "a b c"

    def test_a_vocabulary_that_cannot_be_stored_is_refused(self) -> None:
        with pytest.raises(VocabularyError, match=r"the URI of concept 1 \('http://ex/b\\nc'\)"):
            small_vocab(["http://ex/a", "http://ex/b\nc"])
        with pytest.raises(VocabularyError, match="the notation of concept 0"):
            Vocabulary("v", ["http://ex/a"], {"en": ["A"]}, notations=["1\n2"])

    def test_save_never_writes_a_file_that_does_not_read_back(self, tmp_path: Path) -> None:
        path = tmp_path / "v.npz"
        small_vocab(["http://ex/a", "http://ex/b"]).save(path)
        before = path.read_bytes()
        broken = Vocabulary.load(path)
        broken._uris[1] = "http://ex/b\nc"  # what no reader or constructor lets through now
        with pytest.raises(VocabularyError, match=r"v\.npz: not written: .*would not read back"):
            broken.save(path)
        assert path.read_bytes() == before, "the stored file is left as it was"
        assert list(Vocabulary.load(path).uris) == ["http://ex/a", "http://ex/b"]
        assert [p.name for p in tmp_path.iterdir()] == ["v.npz"], "no temporary file is left"


class TestDamagedStoredVocabulary:
    def test_damaged_needs_force_then_ids_are_salvaged(self, tmp_path: Path) -> None:
        datadir = DataDir(tmp_path)
        # An update appended a URI with a newline: the ids of the first three are what
        # trained models rely on.
        uris = ["http://ex/a", "http://ex/b", "http://ex/c", "http://ex/d\ne"]
        write_like_old_kuoro(datadir.vocab_path("v"), uris)
        with pytest.raises(VocabularyError, match=r"damaged.*kuoro load-vocab v FILE --force"):
            datadir.load_vocabulary("v")
        newer = small_vocab(["http://ex/f", "http://ex/c", "http://ex/a"])
        with pytest.raises(VocabularyError, match=r"damaged.*kuoro load-vocab v FILE --force"):
            datadir.store_vocabulary(newer)
        merged, update = datadir.store_vocabulary(newer, force=True)
        assert update.repaired is not None and "ids of its 4 concepts are kept" in update.repaired
        again = datadir.load_vocabulary("v")
        assert list(again.uris) == [*uris[:3], "http://ex/d%0Ae", "http://ex/f"]
        assert again.deprecated.tolist() == [False, True, False, True, False]
        assert again.label(4) == "F" and again.fingerprint == merged.fingerprint
        assert again.prefix_fingerprint(3) == small_vocab(uris[:3]).fingerprint

    def test_damaged_notations_keep_every_id(self, tmp_path: Path) -> None:
        datadir = DataDir(tmp_path)
        write_like_old_kuoro(datadir.vocab_path("v"), ["http://ex/a", "http://ex/b"], ["1\n2", ""])
        _, update = datadir.store_vocabulary(small_vocab(["http://ex/b"]), force=True)
        assert (update.kept, update.deprecated, update.added) == (1, 1, 0)
        assert list(datadir.load_vocabulary("v").uris) == ["http://ex/a", "http://ex/b"]

    def test_unreadable_file_starts_afresh_and_says_so(self, tmp_path: Path) -> None:
        datadir = DataDir(tmp_path)
        datadir.vocab_path("v").parent.mkdir(parents=True)
        datadir.vocab_path("v").write_bytes(b"not a zip file")
        _, update = datadir.store_vocabulary(small_vocab(["http://ex/b"]), force=True)
        assert update.repaired is not None
        assert "ids start afresh" in update.repaired and "must be retrained" in update.repaired
        assert list(datadir.load_vocabulary("v").uris) == ["http://ex/b"]

    def test_ambiguous_uris_start_afresh(self, tmp_path: Path) -> None:
        datadir = DataDir(tmp_path)
        write_like_old_kuoro(datadir.vocab_path("v"), ["http://ex/a\nhttp://ex/b"])
        _, update = datadir.store_vocabulary(small_vocab(["http://ex/b"]), force=True)
        assert update.repaired is not None and "cannot be told apart" in update.repaired
        assert list(datadir.load_vocabulary("v").uris) == ["http://ex/b"]


# -- vocabulary files are untrusted input -----------------------------------------------------

_ENTITY_REFS = ["&lol;"] + [f"&lol{i};" for i in range(1, 9)]
ENTITY_BOMB = (
    '<?xml version="1.0"?>\n<!DOCTYPE rdf:RDF [\n <!ENTITY lol "lol">\n'
    + "".join(f' <!ENTITY lol{i} "{_ENTITY_REFS[i - 1] * 10}">\n' for i in range(1, 10))
    + ']>\n<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"\n'
    ' xmlns:skos="http://www.w3.org/2004/02/skos/core#">\n'
    '<skos:Concept rdf:about="http://ex/a"><skos:prefLabel xml:lang="en">&lol9;'
    "</skos:prefLabel></skos:Concept>\n</rdf:RDF>\n"
)


class TestUntrustedFiles:
    @pytest.mark.parametrize("suffix", [".rdf", ".owl"])
    @pytest.mark.integration
    def test_xml_entity_bomb_is_refused_at_once(self, tmp_path: Path, suffix: str) -> None:
        path = write(tmp_path / f"bomb{suffix}", ENTITY_BOMB)
        assert len(ENTITY_BOMB) < 1300
        # In a child process, so that a regression fails the test instead of hanging it.
        code = f"from kuoro.vocab.formats import read_vocabulary; read_vocabulary({str(path)!r})"
        env = {**os.environ, "PYTHONPATH": str(Path(kuoro.__file__).parents[1])}
        started = time.perf_counter()
        try:
            result = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env
            )
        except subprocess.TimeoutExpired:
            pytest.fail("the entity bomb was expanded")
        assert time.perf_counter() - started < 15
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 1
        assert re.search(
            rf"VocabularyError: .*bomb\{suffix}:3: the XML declares the entity 'lol'; files with "
            "DTD entity declarations are refused",
            last,
        ), last
        started = time.perf_counter()
        with pytest.raises(VocabularyError, match="DTD entity declarations are refused"):
            read_vocabulary(path)
        assert time.perf_counter() - started < 1

    def test_xml_with_a_doctype_but_no_entities_still_loads(self, tmp_path: Path) -> None:
        text = ENTITY_BOMB.split("<!DOCTYPE")[0] + "<!DOCTYPE rdf:RDF>\n"
        text += ENTITY_BOMB.split("]>\n", 1)[1].replace("&lol9;", "A &amp; B")
        assert read_vocabulary(write(tmp_path / "v.rdf", text)).label(0) == "A & B"

    @pytest.mark.parametrize(
        "document",
        [
            {"@context": "{url}", "@id": "http://ex/a", "@type": "skos:Concept"},
            {"@context": [{"skos": SKOS}, "{url}"], "@id": "http://ex/a", "@type": "skos:Concept"},
            {
                "@context": {"skos": SKOS, "x": {"@id": "http://ex/x", "@context": "{url}"}},
                "@graph": [{"@id": "http://ex/a", "@type": "skos:Concept"}],
            },
            {
                "@context": {"@version": 1.1, "@import": "{url}", "skos": SKOS},
                "@id": "http://ex/a",
                "@type": "skos:Concept",
            },
            {
                "@context": {"skos": SKOS},
                "@graph": [{"@context": "{url}", "@id": "http://ex/a", "@type": "skos:Concept"}],
            },
        ],
    )
    def test_jsonld_remote_context_is_refused_without_fetching(
        self, tmp_path: Path, document: dict[str, object]
    ) -> None:
        hits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                body = json.dumps({"@context": {"skos": SKOS}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/ld+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/ctx"
            text = json.dumps(document).replace("{url}", url)
            path = write(tmp_path / "v.jsonld", text)
            with pytest.raises(VocabularyError) as caught:
                read_vocabulary(path, "en")
        finally:
            server.shutdown()
            server.server_close()
        assert hits == [], "no URL is fetched while loading a vocabulary"
        assert re.search(rf"v\.jsonld: the JSON-LD names the @\w+ '{url}'", str(caught.value))

    def test_jsonld_with_inline_context_loads(self, tmp_path: Path) -> None:
        document = {
            "@context": {"skos": SKOS},
            "@id": "http://ex/a",
            "@type": "skos:Concept",
            "skos:prefLabel": {"@value": "A", "@language": "en"},
        }
        vocab = read_vocabulary(write(tmp_path / "v.jsonld", json.dumps(document)))
        assert list(vocab.uris) == ["http://ex/a"] and vocab.label(0) == "A"


def test_salvage_drops_broader_links_of_the_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "v.npz"
    write_like_old_kuoro(path, ["http://ex/a", "http://ex/b\nc"])
    with np.load(path) as data:
        arrays = dict(data)
    arrays["broader_indptr"] = np.zeros(3, np.float64)
    np.savez_compressed(path, **arrays)
    vocab, note = Vocabulary.salvage(path)
    assert vocab is not None and list(vocab.uris) == ["http://ex/a", "http://ex/b%0Ac"]
    assert vocab.broader(0) == () and "ids of its 2 concepts are kept" in note
