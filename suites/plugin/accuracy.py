"""pytest glue of the accuracy gates: options, the ``accuracy_cell`` matrix, trained models, baselines, summary.

Cells are (model with a proxy task) x (target with a budget: converters/defaults/accuracy_budgets.toml, with the
project's baselines/accuracy_budgets.toml layered over it), with the same ``MODEL-TARGET`` ids as the conformance
matrix. All measuring happens in ``export_harness.converters.checks.accuracy``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from export_harness.plugin import project
from export_harness.plugin.cells import cells, expectation_marks
from export_harness.plugin.core import Cell, ExpectedCellFailure, config_error, get_harness, harness_tier
from export_harness.plugin.junit import records_of

if TYPE_CHECKING:
    from export_harness.converters.checks.accuracy import AccuracyResult

RESULTS_KEY = pytest.StashKey[dict[str, tuple[str, dict[str, Any]]]]()
"""This session's accuracy verdicts: cell id -> (outcome, recorded result)."""
STATE_KEY = pytest.StashKey["_State"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness-accuracy", "accuracy gates")
    group.addoption("--accuracy-update-baselines", action="store_true",
                    help="write the measured accuracy of every run cell into baselines/accuracy.json")
    group.addoption("--accuracy-full", action="store_true",
                    help="also run the models and targets listed in [settings] full_only_models / "
                         "full_only_targets of the budgets file (the nightly job)")
    group.addoption("--accuracy-budgets", default=None,
                    help="budgets TOML file layered over the harness's defaults (default: baselines/"
                         "accuracy_budgets.toml in the rootdir when it exists)")
    group.addoption("--accuracy-baselines", default=None,
                    help="baselines JSON file (default: baselines/accuracy.json in the rootdir; created on first "
                         "record)")
    group.addoption("--accuracy-results", default=None, metavar="PATH",
                    help="the matrix report (--harness-report) of an earlier step of the same run: its accuracy "
                         "verdicts count for the exact artifacts (sha256) they measured; the latency step reads "
                         "them to say which timed artifacts passed their accuracy gate")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RESULTS_KEY] = {}
    config.stash[EARLIER_KEY] = _earlier_results(config.getoption("--accuracy-results"))


EARLIER_KEY = pytest.StashKey[dict[str, tuple[str, dict[str, Any]]]]()
"""``--accuracy-results``: cell id -> (verdict, recorded result) of an earlier step of the run."""
_EARLIER_VERDICT = {"PASSED": "passed", "XFAIL": "declared failing (strict xfail)"}


def _earlier_results(path: str | None) -> dict[str, tuple[str, dict[str, Any]]]:
    if not path:
        return {}
    from export_harness.converters.report.matrix_report import load_full_report

    try:
        records = load_full_report(path)["accuracy"]
    except ValueError as exc:
        raise pytest.UsageError(f"--accuracy-results {exc}") from None
    return {r["cell"]: (_EARLIER_VERDICT.get(r.get("outcome", ""), "failed"), r) for r in records}


class _State:
    """Session state: budgets and baselines."""

    def __init__(self, config: pytest.Config) -> None:
        from export_harness.converters.checks.accuracy import BudgetError, Budgets, load_baselines

        try:
            self.budgets = Budgets.load(project.project_file(config, "--accuracy-budgets", "accuracy_budgets.toml"))
        except BudgetError as exc:
            config_error(exc)
        self.names_checked = False
        self.baselines_path = baselines_path(config)
        try:
            self.baselines = load_baselines(self.baselines_path)
        except BudgetError as exc:
            config_error(exc)


def baselines_path(config: pytest.Config) -> Path:
    """``--accuracy-baselines``, else ``<rootdir>/baselines/accuracy.json``."""
    return Path(config.getoption("--accuracy-baselines") or project.baselines_dir(config) / "accuracy.json")


def _state(config: pytest.Config) -> _State:
    state = config.stash.get(STATE_KEY, None)
    if state is None:
        state = config.stash[STATE_KEY] = _State(config)
    return state


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "accuracy_cell" not in metafunc.fixturenames:
        return
    from export_harness.converters.checks.accuracy import BudgetError
    from export_harness.models.training import has_task

    harness = get_harness(metafunc.config)
    state = _state(metafunc.config)
    if not state.names_checked:
        try:
            state.budgets.check_names(harness.models)
        except BudgetError as exc:
            config_error(exc)
        state.names_checked = True
    params = []
    full = metafunc.config.getoption("--accuracy-full") or harness_tier(metafunc.config) == "full"
    for spec, target, marks in cells(harness, guide_chains=True):
        if not has_task(spec) or (spec.name in state.budgets.full_only and not full):
            continue
        if not state.budgets.covers(target.name) or (state.budgets.full_only_target(target.name) and not full):
            continue
        cell = Cell(spec, target)
        marks += expectation_marks(harness.expectations.for_cell(cell.id, "accuracy"))
        params.append(pytest.param(cell, id=cell.id, marks=marks))
    metafunc.parametrize("accuracy_cell", params)


@pytest.fixture
def check_accuracy(pytestconfig: pytest.Config, harness_record: Any) -> Any:
    """``check_accuracy(cell) -> AccuracyResult``: measure, record, fail with the gate's message (+ localisation)."""

    from export_harness.converters.accuracy.evaluate import evaluate_accuracy
    from export_harness.models.training import task_for

    def run(cell: Any) -> AccuracyResult:
        unavailable = getattr(cell.target, "unavailable_reason", None)
        reason = unavailable() if callable(unavailable) else None
        if reason:
            pytest.skip(reason)
        harness = get_harness(pytestconfig)
        state = _state(pytestconfig)
        model = harness.reference_model(cell.spec)
        task = task_for(cell.spec)
        declared = harness.expectations.for_cell(cell.id, "accuracy")
        try:
            result = evaluate_accuracy(cell.spec, cell.target, model, task, cache=harness.cache,
                                       targets=harness.targets, budgets=state.budgets, baselines=state.baselines,
                                       identities=harness.identities,
                                       localise=lambda r: not (declared and declared.explains(r.message())))
        except Exception as exc:
            message = f"[accuracy:export] {cell.id}: {type(exc).__name__}: {exc}"
            if declared and declared.explains(message):
                raise ExpectedCellFailure(message) from None
            pytest.fail(message, pytrace=False)
        training = harness.weights_records.get(cell.spec.name, {})
        harness_record("accuracy", {**result.to_dict(), "training": training})
        if not result.passed:
            if declared and declared.explains(result.message()):
                raise ExpectedCellFailure(result.message())
            pytest.fail(result.message(), pytrace=False)
        return result

    return run


def accuracy_gate_of(config: pytest.Config, cell_id: str, sha256: str) -> dict[str, Any] | None:
    """What the accuracy gate said about this exact artifact (issue: the artifact that passed the gate is the one
    benchmarked): this session's verdict on the cell if it measured the same sha256, else an earlier step's
    (``--accuracy-results``), else the stored baseline's if it recorded that sha256; ``verdict: "other artifact"``
    when the cell measured different bytes; None when no accuracy cell has this id."""
    outcome, res = config.stash.get(RESULTS_KEY, {}).get(cell_id, (None, {}))
    if outcome and res.get("artifact_sha256") == sha256:
        return {"cell": cell_id, "verdict": outcome, "source": "this session"}
    earlier, rec = config.stash.get(EARLIER_KEY, {}).get(cell_id, (None, {}))
    if earlier and rec.get("artifact_sha256") == sha256:
        return {"cell": cell_id, "verdict": earlier, "source": str(config.getoption("--accuracy-results"))}
    state = _state(config)  # the session's budgets and baselines, loaded once
    stored = state.baselines.get(cell_id, {})
    if stored.get("artifact_sha256") == sha256:
        declared = get_harness(config).expectations.for_cell(cell_id, "accuracy")  # failing cells are stored too
        return {"cell": cell_id, "verdict": "declared failing (strict xfail)" if declared else "within stored baseline",
                "source": str(state.baselines_path)}
    if outcome or earlier or stored:
        return {"cell": cell_id, "verdict": "other artifact", "measured_sha256": res.get("artifact_sha256")
                or rec.get("artifact_sha256") or stored.get("artifact_sha256")}
    return None


# ---------------------------------------------------------------------------------------------- reporting


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    props = records_of(report)
    if "accuracy" in props:
        results = _CONFIG.stash.get(RESULTS_KEY, None) if _CONFIG is not None else None
        if results is not None:
            results[props["accuracy"]["cell"]] = (report.outcome, props["accuracy"])


_CONFIG: pytest.Config | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _CONFIG
    _CONFIG = session.config


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results: dict[str, tuple[str, dict[str, Any]]] = config.stash.get(RESULTS_KEY, {})
    if not results:
        return
    tr = terminalreporter
    tr.section("accuracy gates (metric x100; drop in pp unless noted)")
    tr.write_line(f"{'cell':<52} {'metric':<12} {'fp32':>7} {'method':>7} {'drop':>7} {'95% CI':>15} "
                  f"{'budget':>7} {'result':<7}")
    training: dict[str, dict[str, Any]] = {}
    for cell_id, (outcome, res) in sorted(results.items()):
        training[res["model"]] = res.get("training", {})
        for m in res["metrics"]:
            ci = f"{m['ci_low']:+.2f}..{m['ci_high']:+.2f}"
            tr.write_line(f"{cell_id:<52} {m['metric']:<12} {m['fp32'] * 100:>7.2f} {m['method'] * 100:>7.2f} "
                          f"{m['drop']:>+7.2f} {ci:>15} {m['budget']['threshold']:>7g} {outcome.upper():<7}")
    tr.write_line("reference weights (proxy task; metric on the eval split; chance):")
    for model, rec in sorted(training.items()):
        if rec.get("source") != "trained reference weights":
            tr.write_line(f"  {model:<20} weights: {rec.get('source')}")
            continue
        metrics = ", ".join(f"{k} {v * 100:.1f} (chance {rec.get('chance', {}).get(k, 0) * 100:.1f})"
                            for k, v in rec.get("metrics", {}).items())
        state = "cached" if rec.get("cached") else f"trained in {rec.get('train_seconds')} s"
        tr.write_line(f"  {model:<20} {rec.get('recipe', '?'):<34} {metrics}; {state}")
    if config.getoption("--accuracy-update-baselines"):
        from export_harness.converters.checks.accuracy import update_baselines

        entries = {cell: baseline_entry_from_dict(res) for cell, (_, res) in results.items()}
        path = update_baselines(entries, baselines_path(config))
        tr.write_line(f"accuracy baselines updated for {len(entries)} cells in {path}")


def baseline_entry_from_dict(res: dict[str, Any]) -> dict[str, Any]:
    """``baseline_entry`` of a recorded (serialised) result."""
    from export_harness.converters.checks.accuracy import AccuracyResult, Budget, MetricResult, baseline_entry

    result = AccuracyResult(model=res["model"], target=res["target"], task=res["task"],
                            artifact_sha256=res["artifact_sha256"])
    for m in res["metrics"]:
        result.metrics.append(MetricResult(m["metric"], m["higher_is_better"], m["chance"], m["n_units"], m["fp32"],
                                           m["method"], m["drop"], m["ci_low"], m["ci_high"], Budget(**m["budget"])))
    return baseline_entry(result)
