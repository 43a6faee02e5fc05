"""Reading vocabulary files: Annif's TSV and CSV formats, and SKOS in any RDF syntax."""

from __future__ import annotations

import csv
import io
import json
import logging
import xml.parsers.expat
from collections.abc import Iterator
from pathlib import Path

from kuoro.errors import VocabularyError
from kuoro.vocab.vocabulary import Vocabulary, clean_label, control_character, normalize_uri

log = logging.getLogger(__name__)

RDF_SUFFIXES = {
    ".ttl": "turtle",
    ".rdf": "xml",
    ".owl": "xml",
    ".xml": "xml",
    ".nt": "nt",
    ".n3": "n3",
    ".jsonld": "json-ld",
    ".trig": "trig",
}


def read_vocabulary(
    path: str | Path, language: str | None = None, *, name: str | None = None
) -> Vocabulary:
    """Read a vocabulary file, choosing the format by its extension.

    ``.csv`` is Annif's CSV format, RDF extensions (.ttl, .rdf, .nt, ...) are read as SKOS,
    anything else as Annif's TSV format, which needs ``language`` since it names none.
    """
    path = Path(path)
    if not path.is_file():
        raise VocabularyError(f"{path}: no such file")
    name = name or path.stem
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, name, language)
    if suffix in RDF_SUFFIXES:
        return _read_skos(path, name, RDF_SUFFIXES[suffix], language)
    if language is None:
        raise VocabularyError(
            f"{path}: a TSV vocabulary names no language; give it (e.g. --language fi)"
        )
    return _read_tsv(path, name, language)


def _identifier(where: str, what: str, value: str) -> str:
    """``value`` (a URI or notation), refused with ``where`` if it holds a control character."""
    bad = control_character(value)
    if bad is not None:
        raise VocabularyError(
            f"{where}: the {what} {value!r} holds a control character ({bad}); a URI or "
            "notation may not hold line breaks, tabs or other control characters: fix the file"
        )
    return value


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("rb") as raw:
        for lineno, data in enumerate(raw, start=1):
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise VocabularyError(
                    f"{path}:{lineno}: invalid UTF-8 (byte {exc.start} of the line)"
                ) from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            yield lineno, line.rstrip("\r\n")


def _read_tsv(path: Path, name: str, language: str) -> Vocabulary:
    uris: list[str] = []
    labels: list[str | None] = []
    notations: list[str | None] = []
    seen: set[str] = set()
    for lineno, line in _text_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        fields = line.split("\t")
        if len(fields) < 2:
            raise VocabularyError(f"{where}: expected '<uri>\\tlabel', found no tab")
        uri = _identifier(where, "URI", normalize_uri(fields[0]))
        if not uri:
            raise VocabularyError(f"{where}: empty URI")
        if uri in seen:
            log.warning("%s: URI %s listed again; keeping the first", where, uri)
            continue
        seen.add(uri)
        uris.append(uri)
        labels.append(clean_label(fields[1]))
        notation = fields[2].strip() if len(fields) > 2 else ""
        notations.append(_identifier(where, "notation", notation) or None)
    if not uris:
        raise VocabularyError(f"{path}: no concepts found")
    return Vocabulary(name, uris, {language: labels}, notations=notations)


def _read_csv(path: Path, name: str, language: str | None) -> Vocabulary:
    text = io.StringIO("".join(line + "\n" for _, line in _text_lines(path)))
    reader = csv.reader(text)
    header = next(reader, [])
    label_columns = [i for i, c in enumerate(header) if c.startswith("label_")]
    if "uri" not in header or not label_columns:
        raise VocabularyError(
            f"{path}: a CSV vocabulary needs a 'uri' column and 'label_<lang>' columns; "
            f"found {', '.join(header) or 'no header'}"
        )
    languages = [header[i].removeprefix("label_") for i in label_columns]
    if language is not None and language not in languages:
        raise VocabularyError(f"{path}: no label column for language '{language}'")
    uri_column = header.index("uri")
    notation_column = header.index("notation") if "notation" in header else None
    uris: list[str] = []
    labels: dict[str, list[str | None]] = {lang: [] for lang in languages}
    notations: list[str | None] = []
    deprecated: list[bool] = []
    while True:
        # A quoted field may span lines: a record is named by the line it starts on.
        start = reader.line_num + 1
        row = next(reader, None)
        if row is None:
            break
        if not row:
            continue
        row += [""] * (len(header) - len(row))
        where = f"{path}:{start}"
        uri = _identifier(where, "URI", normalize_uri(row[uri_column]))
        if not uri:
            raise VocabularyError(f"{where}: empty URI")
        row_labels = [clean_label(row[i]) for i in label_columns]
        uris.append(uri)
        for lang, label in zip(languages, row_labels, strict=True):
            labels[lang].append(label)
        notation = row[notation_column].strip() if notation_column is not None else ""
        notations.append(_identifier(where, "notation", notation))
        deprecated.append(not any(row_labels))  # Annif's convention for removed concepts
    if not uris:
        raise VocabularyError(f"{path}: no concepts found")
    return Vocabulary(name, uris, labels, notations=notations, deprecated=deprecated)


def _read_skos(path: Path, name: str, rdf_format: str, language: str | None) -> Vocabulary:
    # rdflib takes half a second to import: only SKOS files need it.
    from rdflib import Graph, Literal, URIRef
    from rdflib.namespace import DCTERMS, OWL, RDF, RDFS, SKOS

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VocabularyError(f"{path}: cannot read: {exc.strerror}") from None
    # Checked before rdflib sees a byte: it would expand XML entities without bound and fetch
    # the remote contexts of JSON-LD.
    if rdf_format == "xml":
        _refuse_xml_entities(path, data)
    elif rdf_format == "json-ld":
        _refuse_remote_contexts(path, data)
    graph = Graph()
    try:
        # The file's own URI as the base, as when rdflib reads the file itself.
        graph.parse(data=data, format=rdf_format, publicID=path.absolute().as_uri())
    except Exception as exc:  # rdflib raises many unrelated types for syntax errors
        message = " ".join(str(exc).split())
        raise VocabularyError(f"{path}: cannot parse as {rdf_format}: {message}") from exc
    concepts = sorted({str(s) for s in graph.subjects(RDF.type, SKOS.Concept)})
    if not concepts:
        raise VocabularyError(f"{path}: no skos:Concept found")
    index = {uri: i for i, uri in enumerate(concepts)}
    labels: dict[str, list[str | None]] = {}
    alt: dict[str, list[list[str]]] = {}
    hidden: dict[str, list[list[str]]] = {}
    notations: list[str | None] = []
    deprecated: list[bool] = []
    broader: list[list[int]] = []
    related: list[list[int]] = []
    replaced_by: list[list[int]] = []

    def linked(ref: URIRef, *predicates: URIRef) -> list[int]:
        found = {str(o) for p in predicates for o in graph.objects(ref, p)}
        return sorted(index[o] for o in found if o in index)

    def add_labels(
        ref: URIRef, i: int, predicate: URIRef, into: dict[str, list[list[str]]]
    ) -> None:
        for literal in graph.objects(ref, predicate):
            if isinstance(literal, Literal) and literal.language:
                text = clean_label(str(literal))
                column = into.setdefault(literal.language, [[] for _ in concepts])
                if text and text not in column[i]:
                    column[i].append(text)
                    column[i].sort()  # rdflib gives them in no set order

    for i, uri in enumerate(concepts):
        ref = URIRef(uri)
        _skos_identifier(path, data, uri, "URI", uri)
        pref = list(graph.objects(ref, SKOS.prefLabel)) or list(graph.objects(ref, RDFS.label))
        for literal in pref:
            if isinstance(literal, Literal) and literal.language:
                column = labels.setdefault(literal.language, [None] * len(concepts))
                column[i] = column[i] or clean_label(str(literal))
        add_labels(ref, i, SKOS.altLabel, alt)
        add_labels(ref, i, SKOS.hiddenLabel, hidden)
        notation = graph.value(ref, SKOS.notation)
        notation_text = str(notation).strip() if notation is not None else ""
        notations.append(_skos_identifier(path, data, uri, "notation", notation_text) or None)
        flags = graph.objects(ref, OWL.deprecated)
        deprecated.append(any(isinstance(v, Literal) and v.toPython() is True for v in flags))
        broader.append(linked(ref, SKOS.broader))
        related.append(linked(ref, SKOS.related))
        replaced_by.append(linked(ref, DCTERMS.isReplacedBy))
    if language is not None and language not in labels:
        raise VocabularyError(
            f"{path}: no labels in language '{language}'; found {', '.join(sorted(labels))}"
        )
    labels = dict(sorted(labels.items()))
    if language is not None:  # the requested language becomes the default one
        labels = {language: labels[language], **labels}
    return Vocabulary(
        name,
        concepts,
        labels,
        notations=notations,
        deprecated=deprecated,
        broader=broader,
        alt_labels=alt,
        hidden_labels=hidden,
        related=related,
        replaced_by=replaced_by,
    )


def _skos_identifier(path: Path, data: bytes, uri: str, what: str, value: str) -> str:
    """``value`` (the URI or notation of concept ``uri``), refused if it holds a control
    character, naming the line where the URI first appears when it is written out in full
    (RDF parsers report no line for a triple)."""
    if control_character(value) is None:
        return value
    cut = next((i for i, char in enumerate(uri) if control_character(char)), len(uri))
    known = uri[:cut].encode("utf-8", "replace")
    offset = data.find(known) if known else -1
    line = f":{data[:offset].count(_NEWLINE) + 1}" if offset >= 0 else ""
    concept = "" if value == uri else f": concept {uri!r}"
    return _identifier(f"{path}{line}{concept}", what, value)


_NEWLINE = b"\n"


class _RootReached(Exception):
    """The XML prolog, where a DTD and its entity declarations must be, has been read."""


def _refuse_xml_entities(path: Path, data: bytes) -> None:
    """Refuse an XML file whose DTD declares entities, before anything expands them.

    An entity declaration is what a "billion laughs" file is made of, and an RDF vocabulary
    needs none. Declarations can only stand in the prolog, so expat reads up to the root
    element; it never fetches an external DTD or entity.
    """
    parser = xml.parsers.expat.ParserCreate()

    def entity(name: str, is_parameter: bool, *_: object) -> None:
        kind = "parameter entity" if is_parameter else "entity"
        raise VocabularyError(
            f"{path}:{parser.CurrentLineNumber}: the XML declares the {kind} '{name}'; "
            "files with DTD entity declarations are refused (they can expand without bound): "
            "remove the <!ENTITY ...> declarations"
        )

    def root(*_: object) -> None:
        raise _RootReached

    parser.EntityDeclHandler = entity
    parser.StartElementHandler = root
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        parser.Parse(data, True)
    except _RootReached:
        return
    except xml.parsers.expat.ExpatError as exc:
        raise VocabularyError(f"{path}: cannot parse as xml: {exc}") from None


def _refuse_remote_contexts(path: Path, data: bytes) -> None:
    """Refuse a JSON-LD file that names a @context (or @import) by URL instead of inlining it.

    rdflib would fetch it: loading a vocabulary reads no URL.
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise VocabularyError(f"{path}: cannot parse as json-ld: {exc}") from None
    stack: list[object] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                referenced = value if isinstance(value, list) else [value]
                if key in ("@context", "@import") and any(isinstance(v, str) for v in referenced):
                    url = next(v for v in referenced if isinstance(v, str))
                    raise VocabularyError(
                        f"{path}: the JSON-LD names the {key} {url!r} instead of including it; "
                        "Kuoro fetches nothing while loading a vocabulary: put the context in "
                        "the file"
                    )
                stack.append(value)
