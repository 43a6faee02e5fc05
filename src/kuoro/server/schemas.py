"""The REST API's request and response bodies: the schemas of Annif's OpenAPI spec."""

# No ``from __future__ import annotations``: FastAPI and pydantic read these annotations at
# run time.

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class ApiInfo(BaseModel):
    title: str
    version: str


class BackendInfo(BaseModel):
    backend_id: str


class VocabInfo(BaseModel):
    vocab_id: str
    languages: list[str]
    size: int | None
    loaded: bool


class VocabList(BaseModel):
    vocabs: list[VocabInfo]


class ProjectInfo(BaseModel):
    project_id: str
    name: str
    language: str
    backend: BackendInfo
    vocab: VocabInfo | None
    vocab_language: str | None
    is_trained: bool | None
    modification_time: datetime | None
    # Beyond Annif's fields: why the project cannot answer now, or None when it can.
    error: str | None = None


class ProjectList(BaseModel):
    projects: list[ProjectInfo]


class SourcePart(BaseModel):
    """One source's part in a fused suggestion."""

    source: str
    score: float | None = Field(description="its raw score; null when it did not suggest it")
    rank: int | None = Field(description="the concept's rank in its list (1 = its best)")
    weight: float = Field(description="its weight (kuoro: its gate for the document)")
    share: float = Field(description="weight · score (linear: 20 · weight · log1p(score))")
    trust: float | None = Field(description="kuoro: the concept's trust in it · its score")


class MemberPart(BaseModel):
    """One member of an ensemble: its parts add up to its value."""

    value: float
    score: float
    parts: dict[str, float]


class FusionExplanation(BaseModel):
    """A fused score taken apart: ``parts`` add up to ``value``, the value before the output
    ``transform`` (averaged over ``members`` when there are several; the score is then the
    members' mean score, ``model_score``; ``score`` is that calibrated where the model has a
    calibration)."""

    kind: Literal["fusion"]
    family: str
    transform: str
    score: float
    model_score: float
    value: float
    parts: dict[str, float]
    weighted_mean: float | None
    sources: list[SourcePart]
    members: list[MemberPart] | None


class SourceProjectExplanation(BaseModel):
    """A source project's score: its model's own, with nothing to take apart."""

    kind: Literal["source"]
    source: str
    score: float
    rank: int


Explanation = Annotated[FusionExplanation | SourceProjectExplanation, Field(discriminator="kind")]
# A record of ``kuoro.fusion.explain`` (plain data) as the schema's model.
explanation_model = TypeAdapter(Explanation).validate_python


class SuggestionResult(BaseModel):
    uri: str
    label: str | None
    notation: str | None
    score: float
    # Beyond Annif's fields, and only when asked for (explain=true): absent, not null,
    # otherwise, so that an answer without it is Annif's to the byte.
    explanation: Explanation | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description="why the suggestion scored so; only with explain=true",
    )


class SuggestionResultList(BaseModel):
    results: list[SuggestionResult]


class BatchSuggestionResult(SuggestionResultList):
    document_id: str | None


class SuggestForm(BaseModel):
    """The form fields of ``suggest``; others (Annif's ``metadata_*``, ``project``) are ignored."""

    model_config = ConfigDict(extra="ignore")

    text: str = Field(description="input text")
    limit: int = Field(10, ge=0, description="maximum number of results")
    threshold: float = Field(0.0, ge=0, le=1, description="minimum score")
    language: str | None = Field(None, description="language of the labels")
    explain: bool = Field(False, description="add each result's explanation (Kuoro's)")


async def suggest_form(request: Request) -> SuggestForm:
    # Read by hand, not with FastAPI's Form(): that takes an empty text for a missing one.
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str) and (v or k == "text")}
    try:
        return SuggestForm.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from exc


SUGGEST_FORM_BODY = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                **SuggestForm.model_json_schema(),
                "additionalProperties": {"type": "string"},
            }
        }
    },
}


class InputDocument(BaseModel):
    text: str
    document_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class LearnSubject(BaseModel):
    uri: str
    label: str | None = None


class LearnDocument(BaseModel):
    """A document with its known good subjects; one without text or subjects is skipped."""

    text: str | None = None
    subjects: list[LearnSubject] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)


class Problem(BaseModel):
    """An error, as RFC 9457 (and Annif) describe it."""

    model_config = ConfigDict(json_schema_extra={"example": {
        "type": "about:blank", "title": "Project not found", "status": 404,
        "detail": "Project 'x' not found",
    }})  # fmt: skip

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class ProjectHealth(BaseModel):
    """``error`` says why a project cannot answer (how to train it, when it is not trained),
    or, beside ``ready``, why a newer model than the one it answers with failed to load."""

    status: Literal["ready", "not loaded", "not trained", "error"]
    error: str | None


class Health(BaseModel):
    """``ok`` when every trained project that was loaded can answer, ``degraded`` when some
    cannot; projects not trained yet are listed as such and do not make it degraded."""

    status: Literal["ok", "degraded"]
    projects: dict[str, ProjectHealth]
