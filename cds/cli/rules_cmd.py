"""`cds rules lint|test|docs|compile|schema`: rule author tooling (the rule engine work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cds.fhir import ProfileError, load_profiles
from cds.rules import RuleSet, RuleSetError, default_rules_dir, load_ruleset

app = typer.Typer(help="Lint, test, document and compile the YAML rules.", no_args_is_help=True)

DirArg = Annotated[
    Path | None,
    typer.Argument(help="rules folder (default: $OSTEOHOOKS_RULES or the bundled rules/)"),
]


def _load(directory: Path | None) -> RuleSet:
    try:
        order_keys = load_profiles().order_keys
    except ProfileError as exc:
        typer.echo(f"{exc} (set OSTEOHOOKS_FHIR_PROFILES to a complete folder)", err=True)
        raise typer.Exit(1) from None
    try:
        return load_ruleset(
            directory if directory is not None else default_rules_dir(), order_keys=order_keys
        )
    except RuleSetError as exc:
        for error in exc.errors:
            typer.echo(str(error), err=True)
        count = len(exc.errors)
        typer.echo(
            f"{count} error{'s' if count != 1 else ''}: the rule set was not loaded", err=True
        )
        raise typer.Exit(1) from None


@app.command()
def lint(directory: DirArg = None) -> None:
    """Validate every rule file; print each error as file:line:col: message."""
    ruleset = _load(directory)
    typer.echo(f"{len(ruleset.rules)} rules in {len(ruleset.files)} files OK")


@app.command("test")
def examples_cmd(directory: DirArg = None) -> None:
    """Run every active rule's examples through the engine and the reference evaluator."""
    from cds.authoring.examples import run_examples

    ruleset = _load(directory)
    report = run_examples(ruleset)
    for failure in report.failures:
        typer.echo(f"FAIL {failure}", err=True)
    if report.skipped_rules:
        typer.echo(f"skipped the examples of {len(report.skipped_rules)} inactive rules")
    failed = report.run - report.passed
    typer.echo(
        f"{report.passed} of {report.run} examples passed"
        + (f", {failed} failed" if failed else "")
    )
    if report.failures:
        raise typer.Exit(1)


@app.command()
def docs(
    directory: DirArg = None,
    out: Annotated[Path, typer.Option(help="markdown file to write")] = Path("docs/rules.md"),
) -> None:
    """Write the rules in words (conditions, evidence, card topics) as markdown."""
    from cds.authoring.docs import render_docs

    ruleset = _load(directory)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_docs(ruleset), encoding="utf-8")
    typer.echo(f"wrote {out} ({len(ruleset.rules)} rules)")


@app.command("compile")
def compile_cmd(
    directory: Annotated[Path, typer.Argument(help="rules folder")],
    out: Annotated[Path, typer.Option(help="folder for one <file>.json per rule file")],
) -> None:
    """Write the compiled durable_rules ruleset of each rule file (the golden files)."""
    from cds.rules.compiler import compile_file, dumps

    ruleset = _load(directory)
    out.mkdir(parents=True, exist_ok=True)
    for path in ruleset.files:
        target = out / (Path(path).stem + ".json")
        data = compile_file(ruleset, path)
        target.write_text(dumps(data), encoding="utf-8")
        typer.echo(f"wrote {target} ({len(data['rules'])} rules)")


@app.command()
def schema(
    directory: DirArg = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="file to write (the package ships cds/rules/rules.schema.json); default: print it"
        ),
    ] = None,
) -> None:
    """Write the JSON Schema of the rule-file language (for editors: completion and checks
    as one types), generated from the rule model and the names the rules define."""
    from cds.rules.schema import dumps, generate

    ruleset = _load(directory)
    text = dumps(generate(ruleset))
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out}")
