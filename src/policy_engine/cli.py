"""``policy-engine``: a thin command-line client of the public API.

Exit codes (documented in docs/cli.md, never reused): 0 success; 1 expectations not met (a test
failed); 2 the policy is invalid; 3 usage, I/O or invalid facts.
"""

from __future__ import annotations

import datetime as dt
import json
import locale
import os
import sys
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import click

from . import PolicyError, load
from .diagnostics import Diagnostic, FactsError, PolicyEngineError, make, render

EXIT_OK, EXIT_EXPECTATIONS, EXIT_POLICY, EXIT_USAGE = 0, 1, 2, 3


class _Exit(Exception):
    def __init__(self, code: int):
        self.code = code


def _default_lang() -> str:
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    try:
        current = locale.getlocale()[0] or ""
    except ValueError:  # pragma: no cover - odd locales
        current = ""
    return "zh" if current.lower().startswith("zh") else "en"


LANG = click.option("--lang", type=click.Choice(["zh", "en"]), default=None,
                    help="language of explanations and messages (default: from the locale)")


def _fail_policy(exc: PolicyEngineError, fmt: str) -> None:
    click.echo(render(exc.diagnostics, "json" if fmt == "json" else "gnu"), err=fmt != "json")
    raise _Exit(EXIT_POLICY if isinstance(exc, PolicyError) else EXIT_USAGE)


def _day(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date YYYY-MM-DD", param_hint=option) from None


def _load_engine(path: str, fmt: str) -> Any:
    try:
        return load(path)
    except PolicyEngineError as exc:
        _fail_policy(exc, fmt)


def _read_facts(path: str) -> Any:
    from .load import load_file

    if path == "-":
        from .load import load_text

        document, problems = load_text(sys.stdin.read(), "<stdin>")
    else:
        document, problems = load_file(path)
    if document is None or problems:
        raise FactsError(problems or [make("PE401", "facts file is empty", file=path)])
    return document.data


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="policy_engine")
def cli() -> None:
    """Decide, test, lint and catalogue social-assistance policy packages (社会救助政策)."""


@cli.command()
@click.argument("facts", type=click.Path(allow_dash=True))
@click.option("--policy", "policy_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="the policy package folder, e.g. policies/anhui/bengbu/huaiyuan")
@click.option("--as-of", "as_of", required=True, help="the date whose rules apply, YYYY-MM-DD")
@click.option("--entity", default="household", show_default=True,
              help="household, village, township, county, institution or month")
@click.option("--explain", "level", type=click.Choice(["summary", "fails", "full"]), default="summary",
              show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@LANG
def decide(facts: str, policy_path: str, as_of: str, entity: str, level: str, fmt: str, lang: str | None) -> None:
    """Decide one case from a FACTS file (YAML or JSON; - for stdin) and explain it."""
    engine = _load_engine(policy_path, fmt)
    try:
        decision = engine.decide(_read_facts(facts), as_of=as_of, entity=entity)
    except FactsError as exc:
        _fail_policy(exc, fmt)
    except PolicyError as exc:
        _fail_policy(exc, fmt)
    if fmt == "json":
        click.echo(json.dumps(decision.to_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo(decision.explain(lang=lang or _default_lang(), level=level))


@cli.command("test")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "junit"]), default="text", show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="list passing tests too")
def test_command(paths: tuple[str, ...], fmt: str, verbose: bool) -> None:
    """Run the YAML test suites (*_test.yaml) found under PATHS."""
    from .testing import run

    results = run(list(paths))
    counts = {k: sum(1 for r in results if r.result == k) for k in ("PASS", "FAIL", "ERROR", "SKIP")}
    if fmt == "json":
        click.echo(json.dumps({"results": [
            {"file": r.suite, "line": r.line, "name": r.name, "result": r.result, "messages": r.messages,
             "explanation": r.explanation} for r in results], "counts": counts}, ensure_ascii=False, indent=2))
    elif fmt == "junit":
        click.echo(_junit(results, counts))
    else:
        for r in results:
            if r.result == "PASS" and not verbose:
                continue
            click.echo(f"{r.location}: {r.result} {r.name}")
            for message in r.messages:
                click.echo(f"    {message}")
            if r.explanation:
                click.echo("    " + r.explanation.replace("\n", "\n    "))
        click.echo(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['ERROR']} errors, "
                   f"{counts['SKIP']} skipped")
    if counts["ERROR"]:
        raise _Exit(EXIT_POLICY)
    if counts["FAIL"]:
        raise _Exit(EXIT_EXPECTATIONS)
    if not results:
        click.echo("no test suites (*_test.yaml) found", err=True)
        raise _Exit(EXIT_USAGE)


def _junit(results: list[Any], counts: dict[str, int]) -> str:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             (f'<testsuite name="policy-engine" tests="{len(results)}" failures="{counts["FAIL"]}" '
              f'errors="{counts["ERROR"]}" skipped="{counts["SKIP"]}">')]
    for r in results:
        lines.append(f'  <testcase classname={quoteattr(r.suite)} name={quoteattr(r.name)} '
                     f'file={quoteattr(r.suite)} line="{r.line or 0}">')
        body = escape("\n".join(r.messages + ([r.explanation] if r.explanation else [])))
        if r.result == "FAIL":
            lines.append(f"    <failure message={quoteattr(r.messages[0] if r.messages else 'failed')}>{body}</failure>")
        elif r.result == "ERROR":
            lines.append(f"    <error message={quoteattr(r.messages[0] if r.messages else 'error')}>{body}</error>")
        elif r.result == "SKIP":
            lines.append(f"    <skipped message={quoteattr(r.messages[0] if r.messages else 'todo')}/>")
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    return "\n".join(lines)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--as-of", "as_of", default=None, help="check illustrative parameters and table rows in force on "
              "this date (default: each parameter's latest value, every row)")
@click.option("--select", default="", help="only these codes (comma separated, prefixes allowed: PE25)")
@click.option("--ignore", default="", help="skip these codes (comma separated, prefixes allowed)")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "gnu"]), default="text", show_default=True)
def lint(paths: tuple[str, ...], as_of: str | None, select: str, ignore: str, fmt: str) -> None:
    """Report every diagnostic of the packages at PATHS (errors, then warnings).

    Beyond compile diagnostics: illustrative parameters (PE251), overlapping U rows (PE260), table
    gaps (PE261), F rows that never fire (PE262), unused inputs and parameters (PE263, PE264) and
    decisions no test of the package's suites covers (PE265).
    """
    from .compile import compile_package
    from .lint import lint as run_lint
    from .lint import suites_for

    selected = [c.strip() for c in select.split(",") if c.strip()]
    ignored = [c.strip() for c in ignore.split(",") if c.strip()]
    found: list[Diagnostic] = []
    for path in paths:
        policy, diagnostics = compile_package(path)
        found.extend(diagnostics)
        if policy is not None:
            day = _day(as_of, "--as-of") if as_of else None
            found = [d for d in found if d not in diagnostics] + run_lint(policy, day, diagnostics,
                                                                         suites=suites_for(path))
    found = [d for d in found if (not selected or d.code.startswith(tuple(selected)))
             and not d.code.startswith(tuple(ignored) or ("\0",))]
    if fmt == "json":
        click.echo(render(found, "json"))
    else:
        for d in found:
            click.echo(d.gnu() if fmt == "gnu" else f"{d.gnu()}  [{d.severity}]")
        if fmt == "text":
            errors = sum(1 for d in found if d.severity == "error")
            click.echo(f"{errors} errors, {len(found) - errors} warnings")
    if any(d.severity == "error" for d in found):
        raise _Exit(EXIT_POLICY)


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--households", "households", default=None, type=click.Path(dir_okay=False),
              help="extra cases: a YAML/JSON list of {id, facts[, as_of, entity]}, a mapping id -> facts, "
              "or one facts document")
@click.option("--as-of", "as_of", default=None, help="decide both sides on this date (default: each test's as_of)")
@click.option("--as-of-b", "as_of_b", default=None, help="decide side B on this date (default: --as-of)")
@click.option("--suites/--no-suites", "use_suites", default=True, show_default=True,
              help="replay the test households of both sides' suites")
@click.option("--fail-on-change", is_flag=True, help="exit 1 when anything changed")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@LANG
def diff(a: str, b: str, households: str | None, as_of: str | None, as_of_b: str | None, use_suites: bool,
         fail_on_change: bool, fmt: str, lang: str | None) -> None:
    """Compare two policies: A and B are package folders or FOLDER@GIT-REV (or one folder at two dates).

    Lists structural changes (parameters, inputs, decisions, table rows, sources, versions), what is
    in force on each side's date, and every test household whose decisions changed, old → new.
    """
    import contextlib

    from .diff import DiffUsageError, diff_policies, open_side, render_json, render_text

    try:
        day_a = _day(as_of, "--as-of") if as_of else None
        day_b = _day(as_of_b, "--as-of-b") if as_of_b else day_a
    except ValueError as exc:
        raise click.UsageError(f"invalid date: {exc}") from exc
    try:
        with contextlib.ExitStack() as stack:
            try:
                side_a = open_side(a, day_a, stack)
                side_b = open_side(b, day_b, stack)
            except PolicyError as exc:
                _fail_policy(exc, fmt)
            result = diff_policies(side_a, side_b, households, lang or _default_lang(), use_suites)
    except DiffUsageError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(render_json(result) if fmt == "json" else render_text(result))
    if fail_on_change and result["changed"]:
        raise _Exit(EXIT_EXPECTATIONS)


@cli.command()
@click.argument("policy_path", type=click.Path(exists=True, file_okay=False))
@click.option("--as-of", "as_of", default=None, help="show parameter values in force on this date")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@LANG
def catalogue(policy_path: str, as_of: str | None, fmt: str, lang: str | None) -> None:
    """List the decisions, inputs and parameters (with provenance) of a package."""
    engine = _load_engine(policy_path, fmt)
    data = engine.catalogue(as_of=as_of)
    if fmt == "json":
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    lang = lang or _default_lang()
    click.echo(f"{data['policy']['id']}  {data['policy']['title'][lang]}  ({' -> '.join(data['policy']['chain'])})")
    click.echo("decisions:")
    for d in data["decisions"]:
        click.echo(f"  {d['id']:<36} {d['entity']:<11} {d['label'][lang]}  [{'; '.join(d['cites'])}]")
    click.echo("parameters:")
    for p in data["parameters"]:
        value = p["value"]["values"] if p.get("value") else "-"
        click.echo(f"  {p['name']:<36} {p['provenance']:<12} {json.dumps(value, ensure_ascii=False)}  {p['label'][lang]}")
    click.echo("inputs:")
    for i in data["inputs"]:
        click.echo(f"  {i['name']:<36} {i['entity']:<11} {i['path']:<40} {i['label'][lang]}")


@cli.command()
@click.option("--households", "n", required=True, type=click.IntRange(min=0), help="how many households")
@click.option("--province", required=True, type=click.Choice(["anhui", "hebei", "hunan", "shaanxi", "national"]),
              help="whose facts (jurisdiction codes, Anhui's region, Shaanxi's assessment.dibao_tier)")
@click.option("--seed", default=0, show_default=True, type=int, help="random.Random seed: same seed, same file")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="output file: .jsonl (JSON Lines) or .parquet, by suffix")
def synth(n: int, province: str, seed: int, out: str) -> None:
    """Write a seeded synthetic population of households (facts valid against facts.Household)."""
    from .population import format_of, write_synth

    try:
        if format_of(out) not in ("jsonl", "parquet"):
            raise ValueError(f"{out}: synth writes .jsonl or .parquet")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    write_synth(out, n, province, seed)
    click.echo(f"wrote {n} {province} households to {out} (seed {seed})")


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@click.option("--policy", "policy_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="the policy package folder")
@click.option("--as-of", "as_of", required=True, help="the date whose rules apply, YYYY-MM-DD")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="results: .parquet or .jsonl (money as exact decimal strings), by suffix")
@click.option("--decisions", default=None, help="only these decisions (comma separated)")
@click.option("--roster", default=None, type=click.Path(exists=True, dir_okay=False),
              help="current dibao recipients: one household id a line, or CSV household_id[,benefit]")
@click.option("--chunk-size", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="households decided per batch (bounds memory)")
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="chunks decided at once, each in its own thread  [default: one per core, at most 4]")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="progress bar on stderr (only when stderr is a terminal)")
def screen(input_path: str, policy_path: str, as_of: str, out: str, decisions: str | None, roster: str | None,
           chunk_size: int, workers: int | None, progress: bool) -> None:
    """Decide every household of INPUT (.jsonl, .parquet or .csv) in chunks and write OUT.

    Malformed rows are reported (row:column) and skipped; the others are decided.
    """
    import polars as pl
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from . import population as pop

    day = _day(as_of, "--as-of")
    try:
        if pop.format_of(out) == "csv":
            raise ValueError(f"{out}: screen writes .parquet or .jsonl")
        pop.format_of(input_path)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    engine = _load_engine(policy_path, "text")
    wanted = [d.strip() for d in decisions.split(",") if d.strip()] if decisions else None
    try:
        roster_entries = pop.read_roster(roster) if roster else None
    except pop.RosterError as exc:
        click.echo(f"policy-engine: cannot read roster {roster}: {exc}", err=True)
        raise _Exit(EXIT_USAGE) from exc
    err = Console(stderr=True)
    show = progress and err.is_terminal
    bar = Progress(TextColumn("screening"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, disable=not show, transient=True)
    try:
        with bar:
            task = bar.add_task("screen", total=pop.count_rows(input_path) if show else None)
            result = pop.screen(engine, input_path, out, day, wanted, chunk_size,
                                progress=lambda k: bar.advance(task, k), keep_ids=roster_entries is not None,
                                workers=workers)
    except ValueError as exc:  # a file in neither layout: said in one line, not as a usage mistake
        message = str(exc) if str(exc).startswith(input_path) else f"cannot read {input_path}: {exc}"
        click.echo(f"policy-engine: {message}", err=True)
        raise _Exit(EXIT_USAGE) from exc
    except PolicyError as exc:
        _fail_policy(exc, "text")
    except pl.exceptions.PolarsError as exc:  # a file polars cannot read at all (a broken Parquet file)
        click.echo(f"policy-engine: cannot read {input_path}: {str(exc).splitlines()[0]}", err=True)
        raise _Exit(EXIT_USAGE) from exc
    console = Console(soft_wrap=True, highlight=False)
    table = Table(title=f"screen {input_path} -> {out} (as of {day.isoformat()})")
    statuses = ["decided", "needs_information", "not_in_force"]
    table.add_column("decision")
    for status in statuses:
        table.add_column(status, justify="right")
    for did, counts in result.counts.items():
        table.add_row(did, *(str(counts.get(s, 0)) for s in statuses))
    console.print(table)
    rows = sorted({e.row for e in result.errors})
    console.print(f"households decided: {result.households}; decided by the scalar path (fallback): "
                  f"{result.fallback_rows}")
    console.print(f"malformed rows: {len(rows)}" + (" (first 10: " + ", ".join(
        f"{e.row}:{e.column or '-'}" for e in _first_per_row(result.errors, 10)) + ")" if rows else ""))
    for e in _first_per_row(result.errors, 10):
        console.print(f"  {e}")
    console.print(f"elapsed: {result.elapsed:.2f} s, {result.per_second:,.0f} households/s")
    if roster_entries is not None:
        report = pop.roster_check(result, roster_entries, engine)
        path = out + ".roster.json"
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(report, handle, ensure_ascii=False, indent=2)
        console.print("roster: " + ", ".join(f"{k} {v['count']}" for k, v in report.items()) + f" -> {path}")


def _first_per_row(errors: list[Any], limit: int) -> list[Any]:
    seen: set[int] = set()
    out = []
    for e in errors:
        if e.row not in seen:
            seen.add(e.row)
            out.append(e)
            if len(out) == limit:
                break
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the command and maps every failure to its documented exit code."""
    try:
        cli.main(args=argv, prog_name="policy-engine", standalone_mode=False)
    except _Exit as stop:
        return stop.code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except FactsError as exc:
        click.echo(render(exc.diagnostics), err=True)
        return EXIT_USAGE
    except OSError as exc:
        click.echo(f"policy-engine: {exc}", err=True)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
