"""Draft orders (order-sign's context.draftOrders): the DXA orders being signed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError

from cds.contracts.outcome import DataIssue
from cds.fhir import models as m
from cds.fhir.bundle import Entry, flatten, ref_target, subject_of, url_map
from cds.fhir.common import ReadContext, display, errors_to_issues, when, why
from cds.fhir.records import DraftRecord
from cds.fhir.trace import Trace

DRAFT_USED = {"draft", "active"}


@dataclass(frozen=True, slots=True)
class Selected:
    """order-select's draft orders (a Bundle, a list of resources, or one) and the
    `selections` among them (`<resourceType>/<id>`; none: all of them)."""

    orders: Any
    selections: Sequence[str] = ()


def draft_entries(draft_orders: Any, issues: list[DataIssue], trace: Trace) -> list[Entry]:
    """The draft orders (a Bundle, a list of resources, or one) as entries, walked by
    `flatten` (what is no resource is a data error named `draftOrders[i]` or by its
    Bundle and entry): what `read_drafts` reads."""
    if draft_orders is None or (isinstance(draft_orders, list | tuple) and not draft_orders):
        return []  # none (patient-view): nothing below would happen
    items: list[Any] = (
        list(draft_orders) if isinstance(draft_orders, list | tuple) else [draft_orders]
    )
    return flatten(items, issues, trace, label="draftOrders")


def draft_resources(draft_orders: Any) -> list[dict[str, Any]]:
    """The resources of the draft orders as `read_drafts` walks them (the pipeline's digest
    of deterministic uuids hashes them); their data errors are the read's to report."""
    return [e.raw for e in draft_entries(draft_orders, [], Trace())]


def read_drafts(ctx: ReadContext, draft_orders: Any, chosen: str | None) -> None:
    """Every DXA ServiceRequest of the draft orders for the patient evaluated; of a
    `Selected`, only the drafts its selections name: the others are not what the
    clinician is ordering, so they are left out (no trace)."""
    selections: Sequence[str] = ()
    if isinstance(draft_orders, Selected):
        draft_orders, selections = draft_orders.orders, draft_orders.selections
    data = ctx.data
    entries = draft_entries(draft_orders, data.issues, data.trace)
    if not entries:
        return
    if selections:
        wanted = {s.strip() for s in selections}
        entries = [e for e in entries if f"{e.rtype}/{e.raw.get('id')}" in wanted]
    urls = url_map(entries)
    for e in sorted(entries, key=lambda x: x.ref):
        _draft(ctx, e, urls, chosen)


def _draft(ctx: ReadContext, e: Entry, urls: dict[str, str], chosen: str | None) -> None:
    data = ctx.data
    if e.rtype != "ServiceRequest":
        data.trace.ignore(e.ref, f"draft {e.rtype} is not a DXA order")
        return
    try:
        sr = cast(m.ServiceRequest, m.VALIDATE["ServiceRequest"](e.raw))
    except ValidationError as exc:
        data.issues.extend(errors_to_issues(exc, e.rtype, e.ref))
        data.trace.ignore(e.ref, why(data.issues, e.ref))
        return
    status = sr.get("status")
    if status is not None and status not in DRAFT_USED:
        data.trace.ignore(e.ref, f"status {status}")
        return
    subject = subject_of(e.raw)
    if isinstance(subject, str) and chosen is not None and ref_target(subject, urls) != chosen:
        data.trace.ignore(e.ref, f"not this patient (subject {subject})")
        return
    code = sr.get("code")
    hit = ctx.p.dxa_orders.match(code)
    if hit is None or code is None:
        label = m.label(code) if code is not None else "no code"
        data.trace.ignore(e.ref, f"not a DXA order ({label})")
        return
    authored = when(sr.get("authoredOn"), "ServiceRequest.authoredOn", e.ref, data.issues, False)
    data.drafts.append(DraftRecord(ref=e.ref, display=display(code, hit), authored=authored))
    data.trace.use(e.ref, "draft DXA order")
