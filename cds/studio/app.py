"""The rule studio: a page on loopback to try rule edits on a patient.

Pick a patient (a file of the data folder, or a pasted Bundle / CDS Hooks request), see
its cards as an EHR shows them (indicator colour, markdown detail, suggestions with their
orders, links, override reasons) and the explain view (facts with their sources, rules
fired with their values, near misses, ignored resources: `cds.authoring.explain`); edit a rule file
in the page, with lint errors at their line as one types, and see the new cards beside
the current ones; or change one parameter in a form (`cds.studio.parameters` writes the
value's token only, comments and layout kept); save the edit back (only into an existing
file of the rules folder, after a passing lint, with a backup). The feedback page is
`cds.feedback_report.build_report` of the configured store; the impact panel runs the edit
(rule text or parameter) on every patient of the data folder with `cds.replay.impact`,
the implementation behind `cds impact`.

Everything runs in this process on the rules folder given; edits are evaluated on a
temporary copy of it, never on the files until saved. The server binds to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from markdown_it import MarkdownIt
from pydantic import BaseModel, Field

from cds.authoring.explain import ExplainError, build_report, resolve
from cds.contracts.cards import dump_cards
from cds.fhir.profiles import load_profiles
from cds.pipeline import EvaluationError, Evaluator
from cds.replay.worker import card_payload, card_topic
from cds.rules import RuleSetError, load_ruleset
from cds.rules.source import display_path
from cds.studio import parameters
from cds.studio.parameters import ParameterEditError

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK = {"127.0.0.1", "::1"}
_MARKDOWN = MarkdownIt("commonmark", {"html": False})  # text from rules, never raw HTML


class Patient(BaseModel):
    name: str | None = Field(None, description="a file of the data folder")
    pasted: dict[str, Any] | None = Field(None, description="a Bundle or CDS Hooks request")


class EvaluateRequest(Patient):
    edits: dict[str, str] = Field(default_factory=dict, description="rule file -> new text")


class SaveRequest(BaseModel):
    file: str
    text: str


class ParameterEdit(BaseModel):
    parameter: str = Field(description="a parameter name of the rule set")
    value: str = Field(description="the new value as typed in the form")


class ParameterRequest(Patient, ParameterEdit):
    pass


class ImpactRequest(BaseModel):
    edits: dict[str, str] = Field(default_factory=dict, description="rule file -> new text")
    parameter: str | None = Field(None, description="a parameter to set as well")
    value: str | None = Field(None, description="its new value as typed in the form")


class Studio:
    """The state behind the page: the rules folder, the data folder, the current rules."""

    def __init__(
        self,
        rules_dir: Path,
        data_dir: Path | None,
        as_of: date,
        database_url: str | None = None,
    ) -> None:
        self.rules_dir = rules_dir.resolve()
        self.database_url = database_url
        self.data_dir = data_dir.resolve() if data_dir is not None else None
        self.as_of = as_of
        self.profiles = load_profiles()
        self.evaluator = Evaluator.from_rules_dir(
            self.rules_dir, profiles=self.profiles, deterministic_uuids=True
        )
        self._impact_lock = threading.Lock()

    # ------------------------------------------------------------------ rules

    def rule_files(self) -> list[str]:
        return sorted(p.name for p in self.rules_dir.glob("*.yaml"))

    def _rule_path(self, name: str) -> Path:
        path = (self.rules_dir / name).resolve()
        if path.parent != self.rules_dir or path.suffix != ".yaml" or not path.is_file():
            raise HTTPException(404, f"{name!r} is not a rule file of {self.rules_dir}")
        return path

    def lint(self, edits: dict[str, str]) -> tuple[Any, list[dict[str, Any]]]:
        """(rule set, []) for the rules with `edits` applied, or (None, errors)."""
        for name in edits:
            self._rule_path(name)
        if not edits:
            return self.evaluator.ruleset, []
        with tempfile.TemporaryDirectory(prefix="studio-") as tmp:
            copy = Path(tmp) / "rules"
            shutil.copytree(self.rules_dir, copy)
            for name, text in edits.items():
                (copy / name).write_text(text, encoding="utf-8")
            try:
                ruleset = load_ruleset(copy, order_keys=self.profiles.order_keys)
            except RuleSetError as exc:
                shown = display_path(copy)
                return None, [
                    {
                        "file": Path(e.path).name if e.path.startswith(shown) else e.path,
                        "line": e.line,
                        "col": e.col,
                        "message": e.message,
                    }
                    for e in exc.errors
                ]
        return ruleset, []

    def save(self, name: str, text: str) -> dict[str, Any]:
        path = self._rule_path(name)
        _ruleset, errors = self.lint({name: text})
        if errors:
            raise HTTPException(422, {"message": "fix the lint errors first", "errors": errors})
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        backup = path.with_name(f"{path.name}.{stamp}.bak")
        shutil.copy2(path, backup)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        old = self.evaluator
        self.evaluator = Evaluator.from_rules_dir(
            self.rules_dir, profiles=self.profiles, deterministic_uuids=True
        )
        old.close()
        return {"saved": name, "backup": backup.name}

    def parameter_edit(
        self, edit: ParameterEdit, edits: dict[str, str] | None = None
    ) -> dict[str, str]:
        """The edit (rule file -> new text) that writes `edit.value` as the parameter's
        value (into the text of `edits` when that file is being edited too), or a
        ParameterEditError saying what to type."""
        spec = self.evaluator.ruleset.parameter_specs.get(edit.parameter)
        if spec is None:
            raise ParameterEditError(f"{edit.parameter!r} is not a parameter of these rules")
        where = parameters.locate(self.rules_dir, edit.parameter)
        text = (edits or {}).get(where.file)
        if text is None:
            text = self._rule_path(where.file).read_text(encoding="utf-8")
        try:
            new = parameters.set_value(text, where, edit.parameter, spec, edit.value)
        except ParameterEditError as exc:
            raise ParameterEditError(str(exc), where.file, where.line) from None
        return {where.file: new}

    def compare(self, patient: Patient, edits: dict[str, str]) -> dict[str, Any]:
        """The patient's cards with the current rules and, when `edits` lint, with them."""
        current = self.evaluate(patient, self.evaluator)
        if not edits:
            return {"current": current, "edited": None, "errors": []}
        ruleset, errors = self.lint(edits)
        if ruleset is None:
            return {"current": current, "edited": None, "errors": errors}
        edited_evaluator = Evaluator(ruleset, deterministic_uuids=True)
        try:
            edited = self.evaluate(patient, edited_evaluator)
        finally:
            edited_evaluator.close()
        return {"current": current, "edited": edited, "errors": []}

    # ------------------------------------------------------------------ impact

    def impact(self, request: ImpactRequest) -> dict[str, Any]:
        """`cds impact` of the edit on every patient of the data folder: the current rules
        against the edited ones (errors instead when the edit does not lint)."""
        from cds.replay.impact import ImpactError, ImpactOptions, run_impact

        if self.data_dir is None or not self.data_dir.is_dir():
            raise HTTPException(422, "no data folder: start the studio with --data DIR")
        edits = dict(request.edits)
        if request.parameter is not None and request.value is not None:
            edit = ParameterEdit(parameter=request.parameter, value=request.value)
            try:
                edits.update(self.parameter_edit(edit, edits))
            except ParameterEditError as exc:
                return {"impact": None, "errors": [exc.as_error()]}
        ruleset, errors = self.lint(edits)
        if ruleset is None:
            return {"impact": None, "errors": errors}
        options = ImpactOptions(
            paths=[str(self.data_dir)],
            as_of=self.as_of,
            new_rules=self.rules_dir,
            base_rules=self.rules_dir,
            base_label=f"{self.rules_dir} (as saved)",
            new_label=f"{self.rules_dir} with the edit of {', '.join(sorted(edits)) or 'nothing'}",
            workers=0,  # in this process: the server's threads must not be forked
        )
        edited = Evaluator(ruleset, deterministic_uuids=True)
        try:
            with self._impact_lock:  # the replay worker state is per process
                report = run_impact(options, base_evaluator=self.evaluator, new_evaluator=edited)
        except ImpactError as exc:
            raise HTTPException(409, str(exc)) from None
        finally:
            edited.close()
        out = report.as_dict()
        prefix = str(self.data_dir) + os.sep
        for group in out["groups"]:
            for example in group["examples"]:
                name = example["input"]
                example["patient"] = name[len(prefix) :] if name.startswith(prefix) else None
        return {"impact": out, "errors": []}

    # ------------------------------------------------------------------ feedback

    def feedback(self, since: str | None) -> dict[str, Any]:
        """`cds feedback report` of the configured store, as the page shows it."""
        from cds.feedback_report import FeedbackStoreError, build_report

        try:
            day = date.fromisoformat(since) if since else None
        except ValueError:
            raise HTTPException(422, f"since={since!r} is not a day: use YYYY-MM-DD") from None
        if self.database_url is None:
            raise HTTPException(
                422, "no store configured: start the studio with --database-url URL"
            )
        try:
            report = build_report(self.database_url, day)
        except FeedbackStoreError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"store": _safe_url(self.database_url), **report.as_dict()}

    # ------------------------------------------------------------------ patients

    def patients(self) -> list[str]:
        if self.data_dir is None or not self.data_dir.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.data_dir))
            for p in self.data_dir.rglob("*")
            if p.suffix in (".json", ".ndjson") and p.is_file()
        )

    def _job(self, patient: Patient, tmp: Path) -> Any:
        if patient.pasted is not None:
            path = tmp / "pasted.json"
            path.write_text(json.dumps(patient.pasted), encoding="utf-8")
            return resolve(str(path), None)
        if patient.name is None or self.data_dir is None:
            raise HTTPException(422, "pick a patient (name) or paste one (pasted)")
        path = (self.data_dir / patient.name.split("#", 1)[0]).resolve()
        if self.data_dir not in path.parents or not path.is_file():
            raise HTTPException(404, f"{patient.name!r} is not a file of the data folder")
        fragment = patient.name[len(patient.name.split("#", 1)[0]) :]
        return resolve(str(path) + fragment, None)

    def evaluate(self, patient: Patient, evaluator: Evaluator) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="studio-") as tmp:
            try:
                job = self._job(patient, Path(tmp))
            except ExplainError as exc:
                raise HTTPException(422, str(exc)) from None
        try:
            result = evaluator.evaluate(job.to_input(self.as_of))
        except EvaluationError as exc:
            raise HTTPException(422, f"evaluation failed: {exc}") from None
        facts = list(result.facts)
        report = build_report(job, evaluator.ruleset, facts, result, self.as_of)
        values = dump_cards(result.cards)
        return {
            "cards": [_with_html(card) for card in values],
            "explain": _jsonable(report),
            "outcome": result.outcome,
            "history": dxa_history(job, self.as_of, evaluator.ruleset.parameters, values),
        }


#: The LSC parameter of each site whose change the rules judge (rules/change.yaml).
LSC_PARAMETERS = {
    "lumbar-spine": "lsc_lumbar_spine_percent",
    "total-hip": "lsc_total_hip_percent",
    "femoral-neck": "lsc_femoral_neck_percent",
}


def dxa_history(
    job: Any, as_of: date, parameters: dict[str, Any], cards: list[dict[str, Any]]
) -> dict[str, Any]:
    """The patient's DXA results over time, as the FHIR stage reads them (cds.fhir: units
    normalised, entered-in-error left out), per site and score (T, Z, BMD), with each
    site's least significant change and the rescan window of the rescan-interval card."""
    from cds.fhir.read import Reader

    data = Reader(load_profiles(), as_of).read(job.resources, job.patient_id, job.draft_orders)
    points = sorted(
        (
            {
                "site": m.site,
                "score": m.score,
                "value": str(m.value),  # exact as read; the page rounds for display
                "date": m.when.date.isoformat(),
                "scanner": m.scanner.label if m.scanner else None,
            }
            for m in data.measurements
            if m.kind == "dxa" and m.vertebra is None and m.site is not None
        ),
        key=lambda p: (str(p["date"]), str(p["site"]), str(p["score"])),
    )
    window = None
    for card in cards:
        payload = card_payload(card)
        if card_topic(card) == "rescan-interval":
            window = {"from": payload.get("dueFrom"), "to": payload.get("dueTo")}
    return {
        "points": points,
        "lsc": {
            site: parameters[name] for site, name in LSC_PARAMETERS.items() if name in parameters
        },
        "rescan": window,
        "asOf": as_of.isoformat(),
    }


def _safe_url(url: str) -> str:
    """The store's URL without its password (shown in the page)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # the store itself reports it when read
        return "(unparsable database URL)"


def _with_html(card: dict[str, Any]) -> dict[str, Any]:
    out = dict(card)
    if isinstance(card.get("detail"), str):
        out["detailHtml"] = _MARKDOWN.render(card["detail"])
    return out


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def create_app(studio: Studio) -> FastAPI:
    app = FastAPI(title="osteohooks rule studio", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def loopback_only(request: Request, call_next: Any) -> Any:
        client = request.client.host if request.client else ""
        if client not in LOOPBACK:
            from fastapi.responses import JSONResponse

            return JSONResponse({"detail": "the studio answers on loopback only"}, 403)
        return await call_next(request)

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return {
            "rules": str(studio.rules_dir),
            "data": str(studio.data_dir) if studio.data_dir else None,
            "asOf": studio.as_of.isoformat(),
            "patients": studio.patients(),
            "ruleFiles": studio.rule_files(),
        }

    @app.get("/api/rules/{name}")
    def rule_text(name: str) -> dict[str, str]:
        return {"file": name, "text": studio._rule_path(name).read_text(encoding="utf-8")}

    @app.post("/api/lint")
    def lint(edits: dict[str, str]) -> dict[str, Any]:
        _ruleset, errors = studio.lint(edits)
        return {"errors": errors}

    @app.post("/api/evaluate")
    def evaluate(request: EvaluateRequest) -> dict[str, Any]:
        return studio.compare(request, request.edits)

    @app.get("/api/parameters")
    def parameter_list() -> list[dict[str, Any]]:
        return parameters.listing(studio.evaluator.ruleset.parameter_specs, studio.rules_dir)

    @app.post("/api/parameters/evaluate")
    def parameter_evaluate(request: ParameterRequest) -> dict[str, Any]:
        try:
            edits = studio.parameter_edit(request)
        except ParameterEditError as exc:
            current = studio.evaluate(request, studio.evaluator)
            return {"current": current, "edited": None, "errors": [exc.as_error()]}
        return studio.compare(request, edits)

    @app.post("/api/parameters/save")
    def parameter_save(request: ParameterEdit) -> dict[str, Any]:
        try:
            [(name, text)] = studio.parameter_edit(request).items()
        except ParameterEditError as exc:
            raise HTTPException(422, {"message": str(exc), "errors": [exc.as_error()]}) from None
        return studio.save(name, text)

    @app.get("/api/feedback")
    def feedback(since: str | None = None) -> dict[str, Any]:
        return studio.feedback(since)

    @app.post("/api/impact")
    def impact(request: ImpactRequest) -> dict[str, Any]:
        return studio.impact(request)

    @app.post("/api/save")
    def save(request: SaveRequest) -> dict[str, Any]:
        return studio.save(request.file, request.text)

    return app
