"""A JSON Schema of the rule-file language, for editors (VS Code's YAML extension).

Generated from the rule model (`cds.rules.model.RuleFile`, through pydantic) and then
made specific with what the model leaves as plain strings: the fact types and their
fields (per fact type, with each field's values and type for `eq`/`ne`/`in`), the
operators, the parameters, card topics, indicators, statuses, evidence ids, order codes
and the payload fields and values of each topic (the card contract). Names that rule
files define (parameters, derived fact types) and the evidence and order-code registries
come from a loaded rule set, so the schema is regenerated with the other goldens
(`make golden`) and shipped in the package as `cds/rules/rules.schema.json`; every
bundled rule file names it on its first line:

    # yaml-language-server: $schema=../cds/rules/rules.schema.json

The schema helps while typing; `cds rules lint` remains the judge (it checks what a
schema cannot: meaning, contradictions, templates, cycles).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cds.contracts.cards import (
    CARD_TOPICS,
    INDICATORS,
    LINK_TYPES,
    TOPIC_PAYLOAD_FIELDS,
    TOPIC_PAYLOAD_VALUES,
)
from cds.rules.facttypes import FactType, FieldSpec
from cds.rules.model import OPERATORS, STATUSES, RuleFile
from cds.rules.ruleset import RuleSet

SHIPPED = Path(__file__).resolve().parent / "rules.schema.json"
#: The line each rule file starts with (the path is relative to the rules/ folder).
MODELINE = "# yaml-language-server: $schema=../cds/rules/rules.schema.json"

_DEFS = "definitions"
_TEMPLATE = {
    "type": "string",
    "pattern": r"\{\{|\{%",
    "description": "a template: {{ ... }} or {% ... %}",
}
_ISO_DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
_OPERATOR_HELP = {
    "eq": "equals",
    "ne": "differs from",
    "lt": "below (numbers and dates)",
    "le": "at most (numbers and dates)",
    "gt": "above (numbers and dates)",
    "ge": "at least (numbers and dates)",
    "in": "is one of the values",
    "exists": "has a value (fields that may be absent)",
    "missing": "is absent (fields that may be absent)",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/{_DEFS}/{name}"}


def _value_schema(spec: FieldSpec) -> dict[str, Any]:
    if spec.enum is not None:
        return {"enum": list(spec.enum)}
    return {
        "integer": {"type": "integer"},
        "number": {"type": "number"},
        "boolean": {"type": "boolean"},
        "string": {"type": "string"},
        "date": _ISO_DATE,
    }[spec.kind]


def _operand(value: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [value, _ref("ParamRef")]}


def _condition(ftype: FactType) -> dict[str, Any]:
    """The condition language on one fact type (`fact` is for the `when` itself; lint says
    when a nested condition names one)."""
    name = f"Condition.{ftype.name}"
    fields = sorted(ftype.fields)
    scalar = {"type": ["string", "number", "boolean"]}
    properties: dict[str, Any] = {
        "all": {"type": "array", "items": _ref(name), "description": "every condition holds"},
        "any": {"type": "array", "items": _ref(name), "description": "at least one holds"},
        "not": {**_ref(name)},
        "field": {
            "enum": fields,
            "description": f"a field of the fact type '{ftype.name}'",
        },
    }
    for op in OPERATORS:
        if op in ("exists", "missing"):
            properties[op] = {"type": "boolean", "description": _OPERATOR_HELP[op]}
        elif op == "in":
            properties[op] = {
                "type": "array",
                "items": _operand(scalar),
                "description": _OPERATOR_HELP[op],
            }
        elif op in ("eq", "ne"):
            properties[op] = {**_operand(scalar), "description": _OPERATOR_HELP[op]}
        else:
            properties[op] = {
                **_operand({"anyOf": [{"type": "number"}, _ISO_DATE]}),
                "description": _OPERATOR_HELP[op],
            }
    properties["fact"] = {"const": ftype.name}
    # The operand of a field with listed values (or a boolean) follows the field:
    # `{field: sex, eq: mail}` is flagged as one types. (Numbers and dates are left to
    # lint, which says more, to keep the schema small.)
    per_field = []
    for field_name in fields:
        spec = ftype.fields[field_name]
        if spec.enum is None and spec.kind != "boolean":
            continue
        value = _value_schema(spec)
        per_field.append(
            {
                "if": {"properties": {"field": {"const": field_name}}, "required": ["field"]},
                "then": {
                    "properties": {
                        "eq": _operand(value),
                        "ne": _operand(value),
                        "in": {"items": _operand(value)},
                    }
                },
            }
        )
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if per_field:
        schema["allOf"] = per_field
    return schema


def _payload(topic: str) -> dict[str, Any]:
    values = TOPIC_PAYLOAD_VALUES.get(topic, {})
    properties: dict[str, Any] = {}
    for key in TOPIC_PAYLOAD_FIELDS[topic]:
        properties[key] = (
            {"anyOf": [{"enum": list(values[key])}, _TEMPLATE]} if key in values else {}
        )
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "description": f"payload fields of topic '{topic}' (the card contract)",
    }


def generate(ruleset: RuleSet) -> dict[str, Any]:
    """The JSON Schema (draft-07) of a rule file, for the names `ruleset` knows."""
    base = RuleFile.model_json_schema(by_alias=True, ref_template=f"#/{_DEFS}/{{model}}")
    defs: dict[str, Any] = base.pop("$defs")
    fact_types = dict(sorted(ruleset.fact_types.items()))
    derived = sorted(n for n, f in fact_types.items() if f.derived)
    evidence = sorted(set(ruleset.evidence.clinical_spec_ids) | set(ruleset.evidence.sources))
    parameters = sorted(ruleset.parameters)

    defs["ParamRef"] = {
        "type": "object",
        "properties": {"param": {"enum": parameters, "description": "a parameter's name"}},
        "required": ["param"],
        "additionalProperties": False,
    }
    defs.pop("Condition")
    for ftype in fact_types.values():
        defs[f"Condition.{ftype.name}"] = _condition(ftype)
    defs["When"] = {
        "type": "object",
        "required": ["fact"],
        "properties": {"fact": {"enum": list(fact_types), "description": "the fact type read"}},
        "allOf": [
            {
                "if": {"properties": {"fact": {"const": name}}, "required": ["fact"]},
                "then": _ref(f"Condition.{name}"),
            }
            for name in fact_types
        ],
    }

    rule = defs["Rule"]["properties"]
    rule["status"] = {"enum": list(STATUSES)}
    rule["evidence"] = {"type": "array", "items": {"enum": evidence}, "minItems": 1}
    rule["id"] = {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$"}
    defs["Rule"]["allOf"] = [
        {
            "if": {
                "properties": {"when": {"properties": {"fact": {"const": name}}}},
                "required": ["when"],
            },
            "then": {
                "properties": {
                    "examples": {
                        "items": {
                            "properties": {
                                "fact": {
                                    "propertyNames": {"enum": sorted(ftype.fields)},
                                    "properties": {
                                        f: {"anyOf": [_value_schema(s), {"type": "null"}]}
                                        for f, s in sorted(ftype.fields.items())
                                        if s.enum is not None
                                    },
                                }
                            }
                        }
                    }
                }
            },
        }
        for name, ftype in fact_types.items()
    ]
    defs["Parameter"]["properties"]["evidence"] = {"type": "array", "items": {"enum": evidence}}
    defs["Emit"]["properties"]["fact"] = {"enum": derived}
    defs["DerivedField"]["properties"]["type"] = {
        "enum": ["integer", "number", "boolean", "string", "date"]
    }
    defs["DerivedFact"]["properties"]["extends"] = {"enum": list(fact_types)}

    card = defs["Card"]
    card["properties"]["topic"] = {"enum": list(CARD_TOPICS)}
    card["properties"]["indicator"] = {"enum": list(INDICATORS)}
    card["allOf"] = [
        {
            "if": {"properties": {"topic": {"const": topic}}, "required": ["topic"]},
            "then": {"properties": {"payload": _payload(topic)}},
        }
        for topic in CARD_TOPICS
    ]
    defs["Link"]["properties"]["type"] = {"enum": list(LINK_TYPES)}
    if ruleset.order_keys is not None:
        defs["Suggestion"]["properties"]["orders"] = {
            "type": "array",
            "items": {"enum": sorted(ruleset.order_keys)},
        }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "osteohooks rule file (rules/*.yaml)",
        "description": (
            "Generated by `cds rules schema` from the rule model; regenerate with "
            "`make golden`. docs/rule-authoring.md describes the language."
        ),
        **base,
        _DEFS: dict(sorted(defs.items())),
    }


def dumps(schema: dict[str, Any]) -> str:
    """The schema file's text: sorted keys, one-space indent, trailing newline."""
    return json.dumps(schema, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
