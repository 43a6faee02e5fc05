"""The report's page: its sections as HTML, escaped, in one self-contained template."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kuoro.evaluation.optimize import best_point
from kuoro.evaluation.report.explanations import explanation_html
from kuoro.evaluation.report.gather import TOP, Gathered, History, Search
from kuoro.evaluation.report.plots import (
    Plot,
    plot_grid,
    plot_reliability,
    plot_search,
    plot_sources,
    plot_training,
)
from kuoro.evaluation.search_results import format_toml_snippet
from kuoro.project.project import Project
from kuoro.util.wording import plural

MIN_SUPPORT = 3  # subjects with fewer gold documents are too rare to judge
SUBJECT_ROWS = 25
EXCERPT_CHARS = 600

# The headline metrics and what they mean, for readers who do not live by them.
HEADLINE = (
    ("NDCG@10", "ranking quality of the first 10 suggestions: 1 = every correct subject first"),
    ("F1@5", "balance of precision and recall in the first 5 suggestions"),
    ("Precision@5", "share of the first 5 suggestions that are correct"),
    ("Recall@5", "share of the correct subjects found among the first 5"),
    ("Precision@1", "share of documents whose first suggestion is correct"),
    ("Precision (doc avg)", "share of the suggestions (up to the limit) that are correct"),
    ("Recall (doc avg)", "share of the correct subjects found (up to the limit)"),
    ("F1 score (doc avg)", "balance of the two above"),
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int]) -> str:
    """An HTML table; cells are HTML already, columns in ``numeric`` right-aligned."""
    head = "".join(
        f'<th class="num">{h}</th>' if i in numeric else f"<th>{h}</th>"
        for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Labels:
    """Concept ids as the reader knows them: the label in the project's language."""

    def __init__(self, project: Project) -> None:
        self.vocabulary = project.vocabulary
        language = project.config.language
        self.language = language if language in self.vocabulary.languages else None

    def __call__(self, concept: int) -> str:
        label = self.vocabulary.label(concept, self.language)
        return _e(label) if label else f"<code>{_e(self.vocabulary.uri(concept))}</code>"

    def with_uri(self, concept: int) -> str:
        uri = _e(self.vocabulary.uri(concept))
        return f'{self(concept)}<div class="uri">{uri}</div>'


def _facts(facts: Sequence[tuple[str, str]]) -> str:
    """Name: value lines; the values are HTML already."""
    items = "".join(f"<dt>{_e(name)}</dt><dd>{value}</dd>" for name, value in facts)
    return f'<dl class="facts">{items}</dl>'


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _img(plot: Plot) -> str:
    return f'<img class="plot" alt="{_e(plot.alt)}" src="{plot.uri}">'


def _headline(gathered: Gathered, corpus: str, limit: int) -> str:
    results = gathered.evaluation.metrics
    cards = "".join(
        f'<div class="card"><div class="value">{_number(results[name], 3)}</div>'
        f'<div class="name">{_e(name)}</div></div>'
        for name, _ in HEADLINE[:4]
    )
    rows = [
        [_e(name), _number(results[name]), _e(meaning)]
        for name, meaning in HEADLINE
        if name in results
    ]
    best = best_point(gathered.grid.points(), "f1")
    return (
        f'<div class="cards">{cards}</div>'
        + _table(["Metric", "Value", "What it says"], rows, numeric=[1])
        + _note(
            f"{plural(gathered.evaluation.documents, 'document')} of {_e(corpus)}; each "
            f"document's {limit} best suggestions (score above 0), as <code>kuoro eval --limit "
            f"{limit}</code> and <code>annif eval</code> count them. "
            f"{plural(int(results['True positives']), 'correct suggestion')}, "
            f"{int(results['False positives'])} wrong, "
            f"{plural(int(results['False negatives']), 'correct subject')} missed. The best "
            "document-average F1 over limits 1–20 and thresholds 0–0.95 is "
            f"{_number(best.f1)} at limit {best.limit}, threshold {best.threshold:.2f}."
        )
        + _note(
            f"Reading the corpus: {_e(gathered.reading)}. "
            "Subjects outside the vocabulary are left out."
        )
    )


def _training_section(history: History, manifest: Mapping[str, Any]) -> str:
    if history.absent == "source project":
        return _note("A source project has no epoch-by-epoch training history.")
    if history.absent == "mean backend":
        return _note("The <code>mean</code> backend trains nothing: there are no curves.")
    if history.absent == "no file":
        return _note("The model was saved without a training history.")
    if history.absent == "empty":
        return _note("The training history is empty or unreadable.")
    records, skipped = history.records, history.skipped
    training = manifest.get("training", {})
    best = training.get("best_epoch")
    facts = (
        f"{training.get('train_documents', '?')} training and "
        f"{training.get('validation_documents', '?')} held-out documents; "
        f"{plural(len(records), 'epoch')} run"
    )
    if best is not None:
        facts += f"; the weights of epoch {best} were kept (the best on the held-out documents)"
    if skipped:
        facts += f"; {skipped} unreadable line{'s' if skipped > 1 else ''} of the history left out"
    return _img(plot_training(records, best)) + _note(_e(facts) + ".")


def _limits_section(gathered: Gathered, limit: int) -> str:
    points = gathered.grid.points()
    return _img(plot_grid(points, limit)) + _note(
        "Left: more suggestions per document find more correct subjects (recall) but a "
        "smaller share of them is correct (precision). Right: a higher score threshold drops "
        f"doubtful suggestions. The dotted line is the limit of this report ({limit}); the "
        "star marks the best F1 (balance of precision and recall) on each curve."
    )


def _calibration_section(gathered: Gathered, limit: int) -> str:
    bins = gathered.evaluation.reliability
    if bins is None or not bins.total:
        return _note("Nothing was suggested: there are no scores to compare.")
    chosen = gathered.manifest.get("training", {}).get("calibration", {}).get("method")
    if gathered.manifest.get("kind") == "source":
        how = "A source project's scores are its own: only fusion models are calibrated."
    elif chosen is None:
        how = "The model's scores are its own: it was saved without a calibration."
    elif chosen == "none":
        how = "The model's scores are its own: no calibration was fitted."
    else:
        how = f"The model's scores are calibrated ({_e(chosen)}) on its held-out documents."
    return _img(plot_reliability(bins, limit)) + _note(
        f"{how} A score reads as a probability when the bars reach the diagonal: of the "
        "suggestions scored about 0.7, about 70% are correct. Expected calibration error "
        f"(ECE, {bins.n_bins} equal-width score bins over each document's {limit} best "
        f"suggestions): {_number(bins.ece())}, the gap between score and share correct, "
        "averaged over the suggestions; 0 is perfect."
    )


def _sources_section(gathered: Gathered) -> str:
    found = gathered.contribution
    if found is None:
        return _note("Only fusion projects combine sources.")
    fused = gathered.evaluation.metrics
    rows = []
    for i, name in enumerate(found.names):
        alone = found.alone[i].compute()
        gate = (
            _number(found.gate_sum[i] / found.gated_documents, 3) if found.gated_documents else "–"
        )
        rows.append(
            [
                f'<span class="name">{_e(name)}</span>',
                _number(found.weights[i], 3),
                gate,
                f"{found.in_top[i] / max(found.top_total, 1):.0%}",
                f"{found.hits_in_top[i] / max(found.hits_total, 1):.0%}",
                f"{found.only_in_top[i] / max(found.top_total, 1):.0%}",
                _number(alone["NDCG@10"]),
                _number(alone["F1@5"]),
            ]
        )
    strong = [f"<strong>{_number(fused[name])}</strong>" for name in ("NDCG@10", "F1@5")]
    rows.append(["<strong>Fusion</strong>", "", "", "", "", "", *strong])
    header = [
        "Source",
        "Configured weight",
        "Learnt weight",
        f"In the top {TOP}",
        "In the correct ones",
        "Only from it",
        "nDCG@10 alone",
        "F1@5 alone",
    ]
    return (
        _img(plot_sources(found))
        + _table(header, rows, numeric=list(range(1, 8)))
        + _note(
            "Learnt weight: the gate the model gives the source, averaged over the documents "
            "(it adapts to each document). In the top 5: the share of the final top 5 "
            "suggestions that the source had suggested too; a subject suggested by several "
            "sources counts for each, so the shares add up to more than 100%. Only from it: "
            "suggestions in the top 5 that no other source had. Alone: the source's own "
            "suggestions, scored like the fusion's."
        )
    )


def _subjects_section(gathered: Gathered, labels: _Labels) -> str:
    results = gathered.evaluation.subjects
    gold = [r for r in results if r.support > 0]
    frequent = [r for r in gold if r.support >= MIN_SUPPORT]
    cutoff = MIN_SUPPORT if frequent else 1
    chosen = sorted(frequent or gold, key=lambda r: (r.f1, -r.support, r.concept))
    rows = [
        [
            labels.with_uri(r.concept),
            str(r.support),
            str(r.predicted),
            str(r.hits),
            _number(r.precision, 2),
            _number(r.recall, 2),
            _number(r.f1, 2),
        ]
        for r in chosen[:SUBJECT_ROWS]
    ]
    never = sum(1 for r in gold if r.hits == 0)
    header = ["Subject", "Documents", "Suggested", "Correct", "Precision", "Recall", "F1"]
    summary = (
        f"{plural(len(gold), 'subject')} in the corpus, {never} of them never suggested "
        f"correctly. Shown: the {len(rows)} worst served of those with at least {cutoff} "
        "documents, lowest F1 first. Documents: how many documents have the subject; "
        "Suggested: how often it was suggested (within the limit); Correct: how often rightly."
    )
    if not rows:
        return _note("No document of the corpus has a subject of the vocabulary.")
    return _note(_e(summary)) + _table(header, rows, numeric=list(range(1, 7)))


def _search_section(project: Project, search: Search) -> str:
    if search.storage is None:  # source backends are not searched
        return _note("No hyperparameters to search for this backend.")
    storage, result = search.storage, search.result
    if result is None:
        return _note(
            "No hyperparameter search has been run for this project "
            f"(<code>kuoro hyperopt {_e(project.project_id)} CORPUS</code>)."
        )
    facts = [
        ("Trials", f"{result.complete} complete, {result.pruned} pruned, {result.failed} failed"),
        ("Best held-out nDCG@10", f"{_number(result.best_value)} (trial {result.best_trial})"),
    ]
    if result.baseline_value is not None:
        facts.append(("Baseline held-out nDCG@10", _number(result.baseline_value)))
    importance = result.importances
    names = sorted(result.best_params, key=lambda n: (-importance.get(n, -1.0), n))
    rows = [
        [
            f"<code>{_e(name)}</code>",
            _e(_short(result.baseline_params.get(name, "–"))),
            _e(_short(result.best_params[name])),
            _e(_short(project.config.params.get(name, "–"))),
            _number(importance[name], 3) if name in importance else "–",
        ]
        for name in names
    ]
    done = result.complete + result.pruned
    comment = f"best of {plural(done, 'trial')}: held-out nDCG@10 {result.best_value:.4f}"
    snippet = format_toml_snippet(project.project_id, result.best_params, comment=comment)
    return (
        _img(plot_search(result, search.trials))
        + _facts(facts)
        + _table(
            ["Parameter", "Baseline", "Best", "Configured now", "Importance"], rows, numeric=[4]
        )
        + _note(
            f"From {_e(storage.name)}. Baseline: the parameters configured when the search "
            "began, its first trial. Configured now: what projects.toml says today. "
            "Importance: the parameter's share of the variation of the held-out score over "
            "the completed trials. The best parameters for projects.toml:"
        )
        + f"<pre>{_e(snippet)}</pre>"
    )


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _documents_section(gathered: Gathered, labels: _Labels) -> str:
    worst = sorted(gathered.worst, reverse=True)  # lowest nDCG first, then corpus order
    if not worst:
        return _note("No document has gold subjects.")
    parts = [
        _note(
            f"The {plural(len(worst), 'document')} with the lowest nDCG@10. "
            "<span class='hit'>✔</span> "
            "marks a suggestion that is among the document's subjects and a subject that was "
            "suggested. For a fusion project, <em>why</em> under a suggestion takes its score "
            "apart: each source's score, rank and weight, and the terms that add up to the "
            "model's value before its output transform (as <code>kuoro suggest --explain</code>)."
        )
    ]
    for entry in worst:
        document = entry.document
        gold = set(document.subjects)
        suggested = {c for c, _ in entry.predicted}
        name = f"Document {document.document_id or -entry.neg_position + 1}"
        text = document.text.strip()
        if len(text) > EXCERPT_CHARS:
            text = text[:EXCERPT_CHARS].rsplit(" ", 1)[0] + " …"
        gold_items = "".join(
            f"<li>{_mark(c in suggested)}{labels(c)}</li>" for c in sorted(gold, key=labels)
        )
        why = entry.explanations or [None] * len(entry.predicted)
        suggested_items = (
            "".join(
                f"<li>{_mark(c in gold)}{labels(c)} <span class='score'>{score:.2f}</span>"
                f"{explanation_html(record)}</li>"
                for (c, score), record in zip(entry.predicted, why, strict=True)
            )
            or "<li class='note'>nothing suggested</li>"
        )
        parts.append(
            '<div class="doc">'
            f"<h3>{_e(name)} <span class='score'>nDCG@10 {-entry.neg_ndcg:.3f}</span></h3>"
            f'<blockquote>{_e(text)}</blockquote><div class="columns">'
            f"<div><h4>Its subjects</h4><ul>{gold_items}</ul></div>"
            f"<div><h4>Suggested, best first</h4><ol>{suggested_items}</ol></div>"
            "</div></div>"
        )
    return "".join(parts)


def _mark(hit: bool) -> str:
    return "<span class='hit'>✔</span> " if hit else "<span class='miss'>✘</span> "


STYLE = """
body { margin: 0; background: #fff; color: #1f2328; line-height: 1.5;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 36px 72px; }
h1 { font-size: 1.9rem; margin: 0 0 4px; }
h2 { font-size: 1.35rem; margin: 44px 0 12px; padding-bottom: 6px;
  border-bottom: 2px solid #d0d7de; }
h3 { font-size: 1.05rem; margin: 0 0 6px; }
h4 { font-size: .9rem; margin: 8px 0 4px; color: #57606a; text-transform: uppercase;
  letter-spacing: .04em; }
.subtitle { color: #57606a; margin: 0 0 16px; }
nav { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 14px; }
nav { display: flex; flex-wrap: wrap; gap: 4px 18px; }
nav a { color: #0969da; text-decoration: none; white-space: nowrap; }
table { border-collapse: collapse; margin: 12px 0; font-size: .95rem; }
th { background: #f6f8fa; font-weight: 600; }
th, td { padding: 5px 12px; border-bottom: 1px solid #e6e9ed; text-align: left;
  vertical-align: top; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #57606a; font-size: .92rem; max-width: 880px; }
.name { white-space: nowrap; }
.uri { color: #8c959f; font-size: .78rem; }
img.plot { display: block; max-width: 100%; height: auto; margin: 8px 0; }
.cards { display: flex; gap: 14px; flex-wrap: wrap; margin: 12px 0 8px; }
.card { border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 18px; min-width: 150px; }
.card .value { font-size: 1.8rem; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .name { color: #57606a; }
.doc { border: 1px solid #d0d7de; border-radius: 8px; padding: 14px 18px; margin: 16px 0; }
pre { display: inline-block; min-width: 360px; margin: 4px 0; background: #f6f8fa;
  border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 14px;
  font-size: .9rem; overflow-x: auto; }
blockquote { margin: 6px 0 8px; padding: 6px 12px; background: #f6f8fa;
  border-left: 3px solid #d0d7de; font-size: .92rem; white-space: pre-wrap; }
.columns { display: grid; grid-template-columns: 1fr 1fr; gap: 24px; }
ul, ol { margin: 0; padding-left: 22px; }
ul { list-style: none; padding-left: 0; }
.hit { color: #1a7f37; font-weight: 700; }
.miss { color: #cf222e; font-weight: 700; }
.score { color: #8c959f; font-size: .85rem; font-weight: normal; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 0; }
dl.facts dt { color: #57606a; } dl.facts dd { margin: 0; }
"""


SECTIONS = (
    ("summary", "Summary"),
    ("training", "Training"),
    ("limits", "Precision and recall against limit and threshold"),
    ("calibration", "Scores as probabilities"),
    ("sources", "What each source contributes"),
    ("subjects", "Subjects served worst"),
    ("search", "Hyperparameter search"),
    ("documents", "Documents served worst"),
)


def render(project: Project, gathered: Gathered, corpus_paths: Sequence[Path], limit: int) -> str:
    """The report's page: the project evaluated on the corpora at ``limit`` suggestions."""
    labels = _Labels(project)
    corpus = ", ".join(str(p) for p in corpus_paths)
    manifest = gathered.manifest
    bodies = {
        "summary": _headline(gathered, corpus, limit),
        "training": _training_section(gathered.history, manifest),
        "limits": _limits_section(gathered, limit),
        "calibration": _calibration_section(gathered, limit),
        "sources": _sources_section(gathered),
        "subjects": _subjects_section(gathered, labels),
        "search": _search_section(project, gathered.search),
        "documents": _documents_section(gathered, labels),
    }
    config = project.config
    sources = ", ".join(f"{r.project_id} ({r.weight:.2f})" for r in config.sources)
    facts = [
        ("Backend", f"<code>{_e(config.backend)}</code>"),
        ("Vocabulary", f"{_e(config.vocab)} ({plural(len(project.vocabulary), 'concept')})"),
        ("Model trained", _e(manifest.get("written_at", "?"))),
        ("Evaluated on", _e(corpus)),
    ]
    if sources:
        facts.insert(1, ("Sources (weight)", _e(sources)))
    nav = "".join(f'<a href="#{anchor}">{_e(title)}</a>' for anchor, title in SECTIONS)
    sections = "".join(_section(a, t, bodies[a]) for a, t in SECTIONS)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Kuoro report: {_e(config.name)}</title><style>{STYLE}</style></head>"
        f"<body><main><h1>{_e(config.name)}</h1>"
        f'<p class="subtitle">Kuoro report on project <code>{_e(project.project_id)}</code>, '
        f"written {time.strftime('%Y-%m-%d %H:%M')}</p>"
        f"{_facts(facts)}<nav>{nav}</nav>{sections}</main></body></html>\n"
    )
