"""The card contract: the one owner of what a card may contain (docs/card-contract.md).

Topics, the payload fields of each topic and their allowed values, the limits
(`MAX_SUMMARY`), the payload's extension key, the order cards are listed in, which topics
each hook answers with, and the typed models: `Card` (CDS Hooks 2.0.1 Card, what the
service answers) and one payload model per topic (`PAYLOAD_MODELS`), from which
:func:`payload_schema` generates the JSON Schema integrators validate against
(`cds contract schema` prints it). The rule validation, the card builder, the invariant
checks, the service and the authoring tools all read these names from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema, models_json_schema

#: The card topics (source.topic.code), in the order the contract lists them.
CARD_TOPICS: tuple[str, ...] = (
    "bmd-classification",
    "artifact-warning",
    "bmd-change",
    "tbs",
    "workup",
    "rescan-interval",
    "dxa-order-timing",
    "therapy-safety",
    "screening",
)
#: The card topics in the order cards are listed (after severity).
TOPIC_ORDER: tuple[str, ...] = (
    "therapy-safety",
    "dxa-order-timing",
    "bmd-classification",
    "artifact-warning",
    "bmd-change",
    "tbs",
    "workup",
    "rescan-interval",
    "screening",
)
#: Order hooks answer about the order; other topics stay for patient-view, except a
#: critical card (a safety alert is never hidden).
HOOK_TOPICS: dict[str, frozenset[str]] = {
    "order-select": frozenset({"dxa-order-timing"}),
    "order-sign": frozenset({"dxa-order-timing"}),
}
Indicator = Literal["info", "warning", "critical"]
INDICATORS: tuple[str, ...] = get_args(Indicator)
#: How severe each indicator is (cards are listed most severe first).
SEVERITY: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
LinkType = Literal["absolute", "smart"]
LINK_TYPES: tuple[str, ...] = get_args(LinkType)
#: A summary has fewer than MAX_SUMMARY characters (CDS Hooks: "<140 characters").
MAX_SUMMARY = 140
#: The key of Card.extension that carries the machine-readable payload.
EXTENSION_KEY = "org.osteohooks"
#: Payload fields whose values merge as the ordered union of the contributing rules.
LIST_FIELDS: tuple[str, ...] = ("findings", "items", "sites")
#: Payload fields every card has, whatever its topic.
COMMON_PAYLOAD_FIELDS: tuple[str, ...] = ("rule", "rules", "evidence", "rulesetVersion")

# ------------------------------------------------------------------------ payload values

Code = Annotated[StrictStr, StringConstraints(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")]
IsoDate = Annotated[
    StrictStr,
    StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$"),
    Field(json_schema_extra={"format": "date"}),
]
Number = StrictInt | StrictFloat
Text = Annotated[StrictStr, StringConstraints(min_length=1)]
Category = Literal[
    "normal",
    "low-bone-mass",
    "osteoporosis",
    "below-expected-range-for-age",
    "within-expected-range-for-age",
    "not-classifiable",
]
Site = Literal["lumbar-spine", "total-hip", "femoral-neck", "forearm"]
ChangeSite = Literal["lumbar-spine", "total-hip"]
Direction = Literal["gain", "loss", "stable"]
ClinicalBasis = Literal["hip-fracture", "vertebral-fracture", "major-fracture-with-low-bone-mass"]
TbsCategory = Literal["normal", "partially-degraded", "degraded"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Payload(_Closed):
    """What every card's `extension["org.osteohooks"]` has."""

    rule: Annotated[Text, Field(description="id of the rule that made the card (the winner)")]
    rules: Annotated[
        list[Text] | SkipJsonSchema[None],
        Field(min_length=1, description="every contributing rule id"),
    ] = None
    evidence: Annotated[
        list[Text], Field(min_length=1, description="clinical-spec ids and source short names")
    ]
    rulesetVersion: Annotated[
        Text | SkipJsonSchema[None],
        Field(description="sha256 of the rule files that made the card"),
    ] = None


class BmdClassificationPayload(Payload):
    category: Category
    scoreType: Literal["T", "Z"] | SkipJsonSchema[None] = None
    site: Site | SkipJsonSchema[None] = None
    value: Annotated[Number | SkipJsonSchema[None], Field(description="the score")] = None
    clinicalOsteoporosis: StrictBool | SkipJsonSchema[None] = None
    clinicalBasis: ClinicalBasis | SkipJsonSchema[None] = None


class ArtifactWarningPayload(Payload):
    findings: Annotated[
        list[Code], Field(min_length=1, description="codes of clinical-spec sections 2.4 and 3")
    ]


class SiteChange(_Closed):
    """One site's change (CS-4.5 rev 2); a comparable site gives all its numbers."""

    site: ChangeSite
    comparable: StrictBool
    percentChange: Number | SkipJsonSchema[None] = None
    lsc: Number | SkipJsonSchema[None] = None
    significant: StrictBool | SkipJsonSchema[None] = None
    direction: Direction | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _comparable_has_numbers(self) -> SiteChange:
        if self.comparable:
            missing = [
                name
                for name in ("percentChange", "lsc", "significant", "direction")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"a comparable site ({self.site}) lacks {', '.join(missing)}")
        return self


class BmdChangePayload(Payload):
    comparable: StrictBool
    percentChange: Annotated[Number | SkipJsonSchema[None], Field(description="if comparable")] = (
        None
    )
    lsc: Number | SkipJsonSchema[None] = None
    significant: Annotated[
        StrictBool | SkipJsonSchema[None], Field(description="if comparable")
    ] = None
    direction: Direction | SkipJsonSchema[None] = None
    sites: Annotated[
        list[SiteChange] | SkipJsonSchema[None],
        Field(min_length=1, description="each site at most once (CS-4.5)"),
    ] = None

    @model_validator(mode="after")
    def _each_site_once(self) -> BmdChangePayload:
        names = [entry.site for entry in self.sites or ()]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"sites lists {', '.join(twice)} twice")
        return self


class TbsPayload(Payload):
    tbsCategory: TbsCategory | SkipJsonSchema[None] = None
    value: Number | SkipJsonSchema[None] = None


class WorkupPayload(Payload):
    items: Annotated[
        list[Code], Field(min_length=1, description="codes of clinical-spec section 6")
    ]


class RescanIntervalPayload(Payload):
    basis: Annotated[Code, Field(description="a code of clinical-spec section 7")]
    minMonths: StrictInt
    maxMonths: StrictInt
    dueFrom: IsoDate
    dueTo: IsoDate


class DxaOrderTimingPayload(Payload):
    tooSoon: StrictBool
    earliestDate: IsoDate | SkipJsonSchema[None] = None
    exception: Annotated[Code | None, Field(description="a code, or null (always present)")]


class TherapySafetyPayload(Payload):
    findings: Annotated[
        list[Code], Field(min_length=1, description="codes of clinical-spec section 9")
    ]


class ScreeningPayload(Payload):
    reason: Text | SkipJsonSchema[None] = None


#: The payload model of each topic.
PAYLOAD_MODELS: dict[str, type[Payload]] = {
    "bmd-classification": BmdClassificationPayload,
    "artifact-warning": ArtifactWarningPayload,
    "bmd-change": BmdChangePayload,
    "tbs": TbsPayload,
    "workup": WorkupPayload,
    "rescan-interval": RescanIntervalPayload,
    "dxa-order-timing": DxaOrderTimingPayload,
    "therapy-safety": TherapySafetyPayload,
    "screening": ScreeningPayload,
}
#: Payload fields per topic (beyond COMMON_PAYLOAD_FIELDS): what a rule's card may set.
TOPIC_PAYLOAD_FIELDS: dict[str, tuple[str, ...]] = {
    topic: tuple(name for name in model.model_fields if name not in COMMON_PAYLOAD_FIELDS)
    for topic, model in PAYLOAD_MODELS.items()
}


def _literal_values(annotation: Any) -> tuple[str, ...]:
    """The strings a `Literal[...]` (possibly optional) annotation allows; () if none."""
    if get_origin(annotation) is Literal:
        return tuple(str(v) for v in get_args(annotation))
    for arg in get_args(annotation):
        if get_origin(arg) is Literal:
            return tuple(str(v) for v in get_args(arg))
    return ()


#: Payload fields whose values the contract enumerates, per topic: a literal value in a
#: rule's payload must be one of these (templated values are checked when the card is built).
TOPIC_PAYLOAD_VALUES: dict[str, dict[str, tuple[str, ...]]] = {
    topic: values
    for topic, model in PAYLOAD_MODELS.items()
    if (
        values := {
            name: allowed
            for name, info in model.model_fields.items()
            if name not in COMMON_PAYLOAD_FIELDS and (allowed := _literal_values(info.annotation))
        }
    )
}


# --------------------------------------------------------------------- the CDS Hooks card

NonEmpty = Annotated[str, StringConstraints(min_length=1)]


def _card_text(value: Any, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise ValueError("Input should be a valid string")
    if not value:
        raise ValueError("String should have at least 1 character")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"String should have at most {max_length} characters")
    return value


def _summary(value: Any) -> str:
    return _card_text(value, MAX_SUMMARY - 1)


#: A card's text: a non-empty `str` as Python holds it. Not pydantic's `str`, which refuses
#: a lone UTF-16 surrogate: the service refuses those at its door, but a replayed input may
#: carry one into a card (a scanner name), and replay writes it escaped, as the input had it.
CardText = Annotated[
    str, PlainValidator(_card_text), WithJsonSchema({"type": "string", "minLength": 1})
]
Summary = Annotated[
    str,
    PlainValidator(_summary),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_SUMMARY - 1}),
]


def _invariant(name: str) -> Any:
    """Field metadata naming the HL7 CDS Hooks invariant a constraint enforces (reported
    with the error by `card_errors`)."""
    return {"invariant": name}


ActionSelectionBehavior = Literal["all", "any", "at-most-one"]


class _Open(BaseModel):
    """CDS Hooks response objects: unknown keys allowed (the spec lets services add them)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


class Coding(_Open):
    """CDS Hooks Coding: code and system required, display conditional."""

    code: NonEmpty
    system: NonEmpty
    display: NonEmpty | None = None


class TopicCoding(_Open):
    """`Source.topic`: a Coding, its fields in the order cards are written (system first)."""

    system: NonEmpty
    code: NonEmpty
    display: NonEmpty | None = None


class Source(_Open):
    label: CardText
    url: CardText | None = None
    icon: CardText | None = None
    topic: TopicCoding | None = None


class Action(_Open):
    type: Literal["create", "update", "delete"]
    description: CardText = Field(json_schema_extra=_invariant("cds-resp-5"))
    resource: dict[str, Any] | None = None
    resourceId: CardText | None = None

    @model_validator(mode="after")
    def _resource(self) -> Action:
        if self.type == "delete" and (self.resourceId is None or self.resource is not None):
            raise ValueError("cds-resp-2: a delete action gives resourceId and no resource")
        if self.type in ("create", "update") and self.resource is None:
            raise ValueError(f"a {self.type} action needs a resource")
        return self


class Suggestion(_Open):
    label: CardText
    uuid: CardText | None = None
    isRecommended: bool | None = None
    actionSelectionBehavior: ActionSelectionBehavior | None = Field(
        None, json_schema_extra=_invariant("cds-resp-7")
    )
    actions: list[Action] | None = Field(None, min_length=1)


class Link(_Open):
    label: CardText
    url: CardText
    type: LinkType
    appContext: CardText | None = None
    autolaunchable: bool | None = None

    @model_validator(mode="after")
    def _cds_resp_3(self) -> Link:
        if self.type != "smart" and self.appContext is not None:
            raise ValueError("cds-resp-3: appContext only on smart links")
        return self


class OverrideReasonCoding(Coding):
    display: NonEmpty = Field(json_schema_extra=_invariant("cds-resp-4"))


class Card(_Open):
    """A CDS Hooks 2.0.1 Card as this service answers it (the payload: `PAYLOAD_MODELS`).

    The one representation of a card: `cds.cards.build_cards` makes it (validated once,
    there), the service, replay, explain and the studio read it, and :func:`dump_cards`
    is the one way it is written as JSON (absent fields omitted, field order as declared).
    """

    uuid: CardText | None = None
    summary: Summary
    indicator: Indicator
    detail: CardText | None = None
    source: Source
    suggestions: list[Suggestion] | None = Field(None, min_length=1)
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[OverrideReasonCoding] | None = Field(None, min_length=1)
    links: list[Link] | None = Field(None, min_length=1)
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _selection(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("cds-resp-6: suggestions need selectionBehavior")
        if self.selectionBehavior == "at-most-one":
            recommended = sum(1 for s in self.suggestions or [] if s.isRecommended)
            if recommended > 1:
                raise ValueError("cds-resp-1: at-most-one allows one recommended suggestion")
        return self

    @property
    def topic(self) -> str | None:
        """`source.topic.code` (None when the card has no topic)."""
        topic = self.source.topic
        return topic.code if topic is not None else None

    @property
    def payload(self) -> dict[str, Any]:
        """The machine-readable payload (`extension[EXTENSION_KEY]`; empty when none)."""
        payload = (self.extension or {}).get(EXTENSION_KEY)
        return payload if isinstance(payload, dict) else {}


def dump_cards(cards: Sequence[Card]) -> list[dict[str, Any]]:
    """The JSON value of `cards` (what the service answers and replay writes)."""
    return [card.dump() for card in cards]


def _field_invariant(model: type[BaseModel], loc: tuple[int | str, ...]) -> str | None:
    """The invariant named on the field at `loc` of `model` (None: none is)."""
    current: Any = model
    found: str | None = None
    for part in loc:
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            continue
        info = current.model_fields.get(part)
        if info is None:
            return None
        extra = info.json_schema_extra
        found = extra.get("invariant") if isinstance(extra, dict) else None  # type: ignore[assignment]
        current = _model_in(info.annotation)
    return found


def _model_in(annotation: Any) -> Any:
    """The BaseModel class inside an annotation (`list[X] | None` -> X), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def card_errors(card: Any) -> list[str]:
    """Why `card` is not a CDS Hooks 2.0.1 Card as this service answers it: the `Card`
    model's validation errors, each as `path: message`, prefixed by the HL7 invariant
    (cds-resp-1..7) its constraint enforces. Empty: a valid card."""
    try:
        Card.model_validate(card)
    except ValidationError as exc:
        out = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
            message = str(error["msg"]).removeprefix("Value error, ")
            invariant = _field_invariant(Card, loc)
            if invariant is not None and not message.startswith(invariant):
                message = f"{invariant}: {message}"
            out.append(f"{path or 'card'}: {message}")
        return out
    return []


def _nullable_required(model: type[Payload]) -> tuple[str, ...]:
    return tuple(
        name
        for name, info in model.model_fields.items()
        if info.is_required() and type(None) in get_args(info.annotation)
    )


#: Payload fields the card contract defines as "value or null": always present, null when no
#: rule sets them. CDS Hooks forbids nulls "unless otherwise specified"; the contract does.
CONTRACT_NULLABLE_FIELDS: dict[str, tuple[str, ...]] = {
    topic: fields
    for topic, model in PAYLOAD_MODELS.items()
    if (fields := _nullable_required(model))
}


def payload_problems(topic: str, payload: Any) -> list[str]:
    """What is wrong with `payload` for a card of `topic` (empty: it keeps the contract)."""
    model = PAYLOAD_MODELS.get(topic)
    if model is None:
        return [f"source.topic.code {topic!r} is not a card topic"]
    try:
        model.model_validate(payload)
    except ValidationError as exc:
        extra = sorted(str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden")
        problems = [f"extension payload has fields outside topic {topic}: {extra}"] if extra else []
        problems.extend(
            f"{topic} payload {'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in exc.errors()
            if e["type"] != "extra_forbidden"
        )
        return problems
    return []


def payload_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a card's contract part: `source.topic.code` one of the
    topics, and `extension["org.osteohooks"]` the payload of that topic."""
    _, definitions = models_json_schema(
        [(model, "validation") for model in PAYLOAD_MODELS.values()],
        ref_template="#/$defs/{model}",
    )
    branches = [
        {
            "if": {
                "properties": {
                    "source": {"properties": {"topic": {"properties": {"code": {"const": t}}}}}
                }
            },
            "then": {
                "properties": {
                    "extension": {
                        "properties": {EXTENSION_KEY: {"$ref": f"#/$defs/{model.__name__}"}}
                    }
                }
            },
        }
        for t, model in PAYLOAD_MODELS.items()
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://osteohooks.org/schema/card-payload.json",
        "title": "osteohooks card: topic and machine-readable payload",
        "description": (
            "A CDS Hooks 2.0.1 card of the osteohooks service: source.topic.code names the "
            f"topic, extension[{EXTENSION_KEY!r}] carries the payload of that topic."
        ),
        "type": "object",
        "required": ["summary", "indicator", "source", "extension"],
        "properties": {
            "summary": {"type": "string", "minLength": 1, "maxLength": MAX_SUMMARY - 1},
            "indicator": {"enum": list(INDICATORS)},
            "source": {
                "type": "object",
                "required": ["label", "topic"],
                "properties": {
                    "topic": {
                        "type": "object",
                        "required": ["system", "code", "display"],
                        "properties": {"code": {"enum": list(CARD_TOPICS)}},
                    }
                },
            },
            "extension": {"type": "object", "required": [EXTENSION_KEY]},
        },
        "allOf": branches,
        "$defs": definitions["$defs"],
    }


def _describe(schema: dict[str, Any], definitions: dict[str, Any]) -> str:
    """A field's allowed values, in words, from its JSON Schema."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        inner = definitions[name]["properties"]
        return "object {" + ", ".join(inner) + "}"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    if "anyOf" in schema:
        return " or ".join(_describe(s, definitions) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_describe(schema.get('items', {}), definitions)} (at least one)"
    if kind == "string" and schema.get("format") == "date":
        return "ISO date (YYYY-MM-DD)"
    if kind == "string" and "pattern" in schema and "a-z0-9" in schema["pattern"]:
        return "code (lower-case, hyphenated)"
    return str(kind)


def contract_tables() -> str:
    """The payload fields of every topic as Markdown (docs/card-contract.md embeds it)."""
    definitions = payload_schema()["$defs"]
    lines: list[str] = []
    for topic, model in PAYLOAD_MODELS.items():
        schema = definitions[model.__name__]
        required = set(schema.get("required", ()))
        lines += [f"### `{topic}`", "", "| field | allowed values | presence | meaning |"]
        lines.append("|---|---|---|---|")
        for name, field_schema in schema["properties"].items():
            if name in required and type(None) in get_args(model.model_fields[name].annotation):
                presence = "always (null when none)"
            else:
                presence = "always" if name in required else "when known"
            meaning = field_schema.get("description", "")
            lines.append(
                f"| `{name}` | {_describe(field_schema, definitions)} | {presence} | {meaning} |"
            )
        lines.append("")
    return "\n".join(lines)
