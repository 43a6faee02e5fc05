"""The catalogue of backend types and their parameters, and the validation of a project's params.

This module is the contract between projects.toml and the implementations: a parameter that is
not listed here is rejected when the configuration is read, not ignored at training time.
"""

from __future__ import annotations

import builtins
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from kuoro.config.annif_names import (
    ANNIF_DROPPED_PARAMS,
    ANNIF_PARAM_NAMES,
)
from kuoro.errors import ConfigError

# Keys that every project has whatever its backend; config.py reads them before the params.
PROJECT_KEYS = (
    "name",
    "language",
    "vocab",
    "backend",
    "analyzer",
    "limit",
    "access",
    "allow_learn",
    "thresholds",
)


def _number(x: float) -> str:
    """Show 1.0 as 1 and 0.9 as 0.9."""
    return str(int(x)) if float(x).is_integer() else str(x)


def show_value(value: object) -> str:
    """Show a value as it would be written in TOML, so that strings and booleans stand out."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


@dataclass(frozen=True)
class ParamSpec:
    """One backend parameter: its type, default, allowed values and a line of help."""

    name: str
    type: builtins.type  # int, float, bool, str, list, or object (anything; `accept` decides)
    default: object
    help: str
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    required: bool = False
    min_exclusive: bool = False
    # For values that no type and range describe: a test and the words for what it accepts.
    accept: Callable[[object], bool] | None = None
    allowed: str | None = None

    def describe(self) -> str:
        """What the parameter accepts, in words: 'an integer between 1 and 3'."""
        if self.allowed is not None:
            return self.allowed
        if self.choices is not None:
            return "one of " + ", ".join(f'"{c}"' for c in self.choices)
        noun = {
            bool: "true or false",
            int: "an integer",
            float: "a number",
            str: "a string",
            list: "a list",
        }.get(self.type, "a value")
        if self.min is not None and self.max is not None:
            if self.min_exclusive:
                return f"{noun} greater than {_number(self.min)} and at most {_number(self.max)}"
            return f"{noun} between {_number(self.min)} and {_number(self.max)}"
        if self.min is not None:
            relation = "greater than" if self.min_exclusive else "of at least"
            return f"{noun} {relation} {_number(self.min)}"
        if self.max is not None:
            return f"{noun} of at most {_number(self.max)}"
        return noun

    def check(self, value: object) -> object:
        """Return the value in its canonical type, or raise ValueError saying what is wrong."""
        if not (self._type_ok(value) and self._range_ok(value)) or (
            self.accept is not None and not self.accept(value)
        ):
            raise ValueError(f"must be {self.describe()}, got {show_value(value)}")
        if self.type is float and isinstance(value, int):
            return float(value)
        return value

    def _type_ok(self, value: object) -> bool:
        # bool is a subclass of int in Python, but `true` is not a count and 1 is not a switch.
        if self.type is bool:
            return isinstance(value, bool)
        if self.type is int:
            return isinstance(value, int) and not isinstance(value, bool)
        if self.type is float:
            return isinstance(value, int | float) and not isinstance(value, bool)
        return isinstance(value, self.type)

    def _range_ok(self, value: object) -> bool:
        if self.choices is not None and value not in self.choices:
            return False
        if not isinstance(value, int | float) or isinstance(value, bool):
            return True
        # nan passes every comparison, inf every lower bound (an int is finite, and may be too
        # big to become a float: it is only compared)
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.min is not None and (value <= self.min if self.min_exclusive else value < self.min):
            return False
        return self.max is None or value <= self.max


@dataclass(frozen=True)
class BackendSpec:
    """A backend type: a source that suggests subjects, or a fusion model that combines sources."""

    name: str
    kind: Literal["source", "fusion"]
    help: str
    params: Mapping[str, ParamSpec]


# The most documents `validation` may hold out by count.
MAX_VALIDATION_COUNT = 1_000_000


def _is_split(value: object) -> bool:
    """A held-out split: a fraction in (0, 1), a document count of at least 1, or a path."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 1 <= value <= MAX_VALIDATION_COUNT
    if isinstance(value, float):
        return 0.0 < value < 1.0
    return isinstance(value, str) and value.strip() != ""


def _is_http_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _int(name: str, default: int, help: str, *, max: int, min: int = 1) -> ParamSpec:
    """An integer parameter; every number has an upper bound, so that no typo of a few extra
    digits makes a run allocate or loop without end."""
    return ParamSpec(name, int, default, help, min=min, max=max)


def _rate(name: str, default: float, help: str, *, max: float) -> ParamSpec:
    return ParamSpec(name, float, default, help, min=0, min_exclusive=True, max=max)


def _bool(name: str, default: bool, help: str) -> ParamSpec:
    return ParamSpec(name, bool, default, help)


def _required_str(
    name: str,
    help: str,
    accept: Callable[[object], bool] | None = None,
    allowed: str | None = None,
) -> ParamSpec:
    return ParamSpec(name, str, None, help, required=True, accept=accept, allowed=allowed)


def _backend(
    name: str, kind: Literal["source", "fusion"], help: str, *params: ParamSpec
) -> BackendSpec:
    return BackendSpec(name, kind, help, MappingProxyType({p.name: p for p in params}))


_TOP_K = _int("top_k", 100, "how many suggestions per document the source keeps", max=10000)
_MIN_DF = _int(
    "min_df", 1, "ignore words that occur in fewer training documents than this", max=1_000_000
)
_NGRAM_MAX = _int("ngram_max", 1, "longest word n-gram used as a feature", max=3)

_SOURCES = ParamSpec(
    "sources",
    list,
    None,
    'source projects and weights: ["proj:2", "proj2"], {proj = 2, proj2 = 1} or "proj:2,proj2"',
    required=True,
)
_VALIDATION = ParamSpec(
    "validation",
    object,
    0.1,
    "held-out documents for early stopping: a fraction, a count, or a corpus path",
    accept=_is_split,
    allowed="a fraction between 0 and 1 (exclusive), a document count between 1 and "
    f"{MAX_VALIDATION_COUNT}, or the path of an existing corpus (relative to the projects "
    "file's folder)",
)
_COOCCURRENCE = ParamSpec(
    "cooccurrence",
    str,
    "sources",
    'which subjects go together, counted on a large corpus: "sources" (the subject sets '
    'of the sources\' own training corpora, recorded when they were trained), "none", or '
    "the path of a corpus to count them on",
    accept=lambda value: isinstance(value, str) and value != "",
    allowed='"sources", "none", or the path of an existing corpus (relative to the projects '
    "file's folder)",
)
_SEED = _int(
    "seed",
    0,
    "random seed for initialisation, shuffling and the held-out split",
    min=0,
    max=2**32 - 1,
)
# kuoro.fusion.calibration.CHOICES, which a test keeps in step with this.
_CALIBRATION = ParamSpec(
    "calibration",
    str,
    "auto",
    "how the scores are made probabilities on the held-out documents: auto = the method of "
    "the lowest held-out log-loss in cross-validation",
    choices=("auto", "temperature", "platt", "isotonic", "none"),
)


def _training(
    learning_rate: float, batch_size: int, max_epochs: int, patience: int
) -> tuple[ParamSpec, ...]:
    """The optimiser and early-stopping parameters that the trainable fusion models share."""
    return (
        _rate("learning_rate", learning_rate, "Adam learning rate", max=1),
        _int("batch_size", batch_size, "documents per training step", max=65536),
        _int("max_epochs", max_epochs, "most passes over the training documents", max=10_000),
        _bool("early_stopping", True, "stop when the held-out score stops improving"),
        _int("patience", patience, "epochs without improvement before stopping", min=0, max=10_000),
    )


BACKENDS: Mapping[str, BackendSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _backend(
                "tfidf",
                "source",
                "TF-IDF similarity between a document and each concept's training text",
                _TOP_K,
                _MIN_DF,
                _NGRAM_MAX,
                _bool("sublinear_tf", True, "use 1 + log(tf) instead of raw term counts"),
            ),
            _backend(
                "omikuji",
                "source",
                "Omikuji tree-based extreme multi-label classifier. Parabel: the defaults; "
                "Bonsai: cluster_balanced = false, cluster_k = 100, max_depth = 3",
                _TOP_K,
                _bool("cluster_balanced", True, "split tree nodes into clusters of equal size"),
                _int("cluster_k", 2, "children per tree node", min=2, max=1000),
                _int("max_depth", 20, "deepest level of the label tree", max=100),
                _int(
                    "collapse_every_n_layers",
                    0,
                    "collapse every n-th tree layer into its parent (0 = never)",
                    min=0,
                    max=100,
                ),
                _MIN_DF,
                _NGRAM_MAX,
                _bool(
                    "sublinear_tf",
                    False,
                    "use 1 + log(tf) instead of raw term counts (raw counts measured better "
                    "for omikuji)",
                ),
            ),
            _backend(
                "fasttext",
                "source",
                "fastText linear classifier over the analyzer's words and word n-grams",
                _TOP_K,
                ParamSpec(
                    "loss",
                    str,
                    "hs",
                    "loss function; ova and softmax cost time in proportion to the vocabulary",
                    choices=("ova", "hs", "softmax", "ns"),
                ),
                _int("dim", 100, "size of the word vectors", max=2048),
                _rate("lr", 0.25, "learning rate", max=10),
                _int("epoch", 15, "passes over the training documents", max=10_000),
                _int("word_ngrams", 1, "longest word n-gram", max=5),
                _int(
                    "min_count", 1, "ignore words that occur fewer times than this", max=1_000_000
                ),
                _int(
                    "chunk_size",
                    1,
                    "suggest for each piece of this many words and average (0 = whole text)",
                    min=0,
                    max=100_000,
                ),
            ),
            _backend(
                "lexical",
                "source",
                "matches the vocabulary's labels in the text and ranks the matches",
                _TOP_K,
                _int(
                    "max_train_documents",
                    20000,
                    "training documents used to learn how to score matches (the first ones)",
                    max=10_000_000,
                ),
            ),
            _backend(
                "annif",
                "source",
                "asks a project of an Annif-compatible REST API for its suggestions",
                _TOP_K,
                _required_str(
                    "endpoint",
                    "base URL of the Annif-compatible REST API, e.g. https://ai.finto.fi/v1",
                    accept=_is_http_url,
                    allowed="an http:// or https:// URL",
                ),
                _required_str("project", "project id on the remote server"),
                _rate("timeout", 30.0, "seconds to wait for one response", max=3600),
                _int("retries", 3, "how often to retry a failed request", min=0, max=100),
                _int("batch_size", 32, "documents per request", max=32),
            ),
            _backend(
                "file",
                "source",
                "reads precomputed suggestions from a file",
                _TOP_K,
                _required_str(
                    "path",
                    "TSV file of lines: document id, concept URI, score (a document without an "
                    "id is looked up by its 1-based position in the corpus); read when training",
                ),
            ),
            _backend(
                "mean",
                "fusion",
                "weighted mean of the sources' scores; nothing to train",
                _SOURCES,
                _VALIDATION,
                _SEED,
                _CALIBRATION,
            ),
            _backend(
                "linear",
                "fusion",
                "one weight per source and concept: the sparse equivalent of Annif's PyTorch "
                "nn_ensemble",
                _SOURCES,
                _VALIDATION,
                _SEED,
                _CALIBRATION,
                *_training(learning_rate=0.003, batch_size=256, max_epochs=10, patience=2),
            ),
            _backend(
                "kuoro",
                "fusion",
                "the default fusion model: a shared network over per-candidate features with "
                "per-concept corrections, on top of the weighted mean",
                _SOURCES,
                _VALIDATION,
                _SEED,
                _CALIBRATION,
                _int("hidden_size", 64, "width of the hidden layer", max=4096),
                # 0: on the protocol dropout 0.1 cost 0.006 nDCG@10 and 0.008 F1@5 (3 seeds)
                # and a third of each epoch's time.
                ParamSpec("dropout", float, 0.0, "dropout rate while training", min=0, max=0.9),
                ParamSpec(
                    "weight_decay",
                    float,
                    0.0001,
                    "L2 penalty on the shared weights",
                    min=0,
                    max=1,
                ),
                *_training(learning_rate=0.003, batch_size=64, max_epochs=50, patience=3),
                _int("members", 1, "models trained side by side and averaged", max=64),
                ParamSpec(
                    "loss",
                    str,
                    "mix",
                    "training loss: per-candidate, per-document ranking, or both",
                    choices=("bce", "listwise", "mix"),
                ),
                _int(
                    "gate_top_k",
                    0,
                    "sources the gate keeps per document (0 = all)",
                    min=0,
                    max=1000,
                ),
                ParamSpec(
                    "concept_l2",
                    float,
                    0.001,
                    "pulls the per-concept corrections towards zero",
                    min=0,
                    max=100,
                ),
                _bool(
                    "concept_sources",
                    True,
                    "learn each concept's own trust in each source (a weight per concept and "
                    "source)",
                ),
                _COOCCURRENCE,
            ),
        )
    }
)


def _unknown_hint(key: str, allowed: list[str]) -> str:
    """Why a key is unknown and what the user probably meant, or ''."""
    if key in PROJECT_KEYS:
        return f" '{key}' is a project setting, not a backend parameter."
    if key in ANNIF_DROPPED_PARAMS:
        return f" Kuoro has no equivalent: {ANNIF_DROPPED_PARAMS[key]}."
    renamed = ANNIF_PARAM_NAMES.get(key)
    if renamed in allowed:
        return f" Did you mean '{renamed}'?"
    owners = sorted(name for name, spec in BACKENDS.items() if key in spec.params)
    if owners:
        return f" '{key}' is a parameter of backend {', '.join(owners)}."
    # A typo of a project setting ('analyser', 'limt') is as likely as one of a parameter.
    close = difflib.get_close_matches(key, [*allowed, *PROJECT_KEYS], n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def check_params(
    project_id: str, backend: str, raw: Mapping[str, object], *, where: str | None = None
) -> tuple[dict[str, object], list[str]]:
    """A project's backend parameters with the defaults filled in, and every problem found
    (one message per key; the parameters are only usable when there is none). ``where``:
    what the messages name instead of the project (e.g. a Python estimator)."""
    where = where or f"project '{project_id}'"
    if backend not in BACKENDS:
        return {}, [f"{where}: unknown backend '{backend}'. Allowed: {', '.join(sorted(BACKENDS))}"]
    specs = BACKENDS[backend].params
    allowed = sorted(specs)
    errors = [
        f"{where}: unknown parameter '{key}' for backend '{backend}'."
        f"{_unknown_hint(key, allowed)} Allowed: {', '.join(allowed)}; "
        f"and in every project: {', '.join(PROJECT_KEYS)}"
        for key in raw
        if key not in specs
    ]
    params: dict[str, object] = {}
    for name, spec in specs.items():
        if name not in raw:
            if spec.required:
                errors.append(
                    f"{where}: missing required parameter '{name}' for backend '{backend}' "
                    f"({spec.help})"
                )
            params[name] = spec.default
            continue
        try:
            params[name] = spec.check(raw[name])
        except ValueError as exc:
            errors.append(f"{where}: parameter '{name}' {exc}")
    return params, errors


def validate_params(project_id: str, backend: str, raw: Mapping[str, object]) -> dict[str, object]:
    """Check a project's backend parameters and fill in the defaults; raise ConfigError if bad
    (one error listing every problem)."""
    params, errors = check_params(project_id, backend, raw)
    if errors:
        raise ConfigError(join_errors(errors))
    return params


def join_errors(errors: list[str]) -> str:
    """Several errors as one message: the first on the first line, saying how many follow."""
    if len(errors) == 1:
        return errors[0]
    more = len(errors) - 1
    return f"{errors[0]} [and {more} more error{'s' if more > 1 else ''} below]\n" + "\n".join(
        errors[1:]
    )


# How a model trained before a parameter existed behaves, where that differs from the
# parameter's default now: such a model is compared with its configuration as trained so.
BEHAVIOUR_BEFORE_PARAMETER: Mapping[str, Mapping[str, object]] = MappingProxyType(
    {
        "omikuji": MappingProxyType({"sublinear_tf": True}),
        # Fusion models trained before calibration existed give the model's raw scores.
        **{backend: MappingProxyType({"calibration": "none"}) for backend in ("mean", "linear")},
        # Models trained before the co-occurrence columns read none.
        "kuoro": MappingProxyType({"calibration": "none", "cooccurrence": "none"}),
    }
)


def parameter_table() -> str:
    """Every backend's parameters as one Markdown table (the README's reference)."""
    lines = [
        "| backend | parameter | default | allowed | meaning |",
        "|---|---|---|---|---|",
    ]
    for backend in BACKENDS.values():
        for spec in backend.params.values():
            default = "required" if spec.required else f"`{show_value(spec.default)}`"
            lines.append(
                f"| `{backend.name}` ({backend.kind}) | `{spec.name}` | {default} "
                f"| {spec.describe()} | {spec.help} |"
            )
    return "\n".join(lines)
