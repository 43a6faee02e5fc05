"""A suggestion's explanation (``kuoro.fusion.explain``) as a folded HTML block of the report."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from kuoro.fusion.explain import PART_WORDS

# Inline, so that the block needs nothing of the page's style sheet.
_TABLE = 'style="margin:4px 0;font-size:.85rem"'
_CELL = 'style="padding:1px 8px;text-align:{}"'


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _rows(rows: Sequence[Sequence[str]], header: Sequence[str], left: Sequence[int] = (0,)) -> str:
    """A small table; the columns in ``left`` aligned left, numbers right."""

    def cells(row: Sequence[str], tag: str) -> str:
        return "".join(
            f"<{tag} {_CELL.format('left' if i in left else 'right')}>{c}</{tag}>"
            for i, c in enumerate(row)
        )

    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return f"<table {_TABLE}><tr>{cells(header, 'th')}</tr>{body}</table>"


def explanation_html(record: Mapping[str, Any] | None) -> str:
    """A ``<details>`` block: the sources' scores, ranks and weights, then the parts adding
    up to the value and the score; "" without a fusion record."""
    if record is None or record.get("kind") != "fusion":
        return ""
    sources = record["sources"]
    trust = any(s["trust"] is not None for s in sources)
    header = ["Source", "Score", "Rank", "Weight", "Share", *(["Trust"] if trust else [])]
    source_rows = [
        [
            _e(s["source"]),
            _number(s["score"]),
            "–" if s["rank"] is None else str(s["rank"]),
            _number(s["weight"]),
            _number(s["share"]),
            *([_number(s["trust"])] if trust else []),
        ]
        for s in sources
    ]
    members = record["members"]
    averaged = f", averaged over {len(members)} members" if members else ""
    part_rows = [
        [f"<code>{_e(name)}</code>", f"{value:+.4f}", _e(PART_WORDS.get(name, ""))]
        for name, value in record["parts"].items()
    ]
    part_rows.append(["<strong>= value</strong>", f"<strong>{record['value']:+.4f}</strong>", ""])
    model_score = float(record.get("model_score", record["score"]))
    calibrated = abs(model_score - record["score"]) > 5e-7
    name = "model score" if calibrated else "score"
    if members:
        each = ", ".join(f"{m['value']:+.4f}" for m in members)
        result = f"{name} = mean over the members of {_e(record['transform'])}({each})"
    elif record["transform"] == "identity":
        result = f"{name} = value"
    else:
        result = f"{name} = {_e(record['transform'])}(value)"
    lines = f"{result} = {model_score:.4f}"
    if calibrated:
        lines += (
            f"<br>score = calibrated on held-out documents({model_score:.4f}) = "
            f"{record['score']:.4f}"
        )
    return (
        '<details style="margin:2px 0 6px"><summary class="note">why</summary>'
        + _rows(source_rows, header)
        + _rows(part_rows, [f"Part{averaged}", "Value", ""], left=(0, 2))
        + f'<div class="note">{lines}</div></details>'
    )
