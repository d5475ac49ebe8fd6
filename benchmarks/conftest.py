"""The benchmark session: which grid (--bench-grid or BENCH_GRID), the run id, and the run's parquet file.

One run id per pytest session (UTC start time + 6 random hex digits); every timed case
appends one row to `<bench-dir>/<run-id>.parquet` (int4_lora_harness.bench.store), rewritten
atomically after each row.
"""
import os

import pytest
import torch

from int4_lora_harness.bench import grids, runner
from int4_lora_harness.bench import store as perf_store

SESSION = pytest.StashKey[dict]()


def pytest_addoption(parser):
    group = parser.getgroup("bench", "INT4 + LoRA benchmark sweeps")
    group.addoption("--bench-grid", default=None,
                    help=f"grid to run: {', '.join(sorted(grids.GRIDS))} (default: $BENCH_GRID, else gpu when "
                         "CUDA is available, else cpu)")
    group.addoption("--bench-dir", default=None,
                    help="folder for <run-id>.parquet (default: reports/bench under the rootdir)")


def new_run_id(now=None):
    """'20250101T120000Z-a1b2c3': the session's start in UTC, then 6 random hex digits."""
    from int4_lora_harness.verify.record import new_run_id as make
    return make(now)


def pytest_configure(config):
    name = config.getoption("--bench-grid") or grids.default_name(os.environ, torch.cuda.is_available())
    try:
        grid = grids.select(name)
        device = grids.device_for(grid, name, torch.cuda.is_available())
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    run_id = new_run_id()
    folder = config.getoption("--bench-dir") or config.rootpath / "reports" / "bench"
    config.stash[SESSION] = dict(grid_name=name, grid=grid, device=device, run_id=run_id,
                                 path=os.path.join(folder, f"{run_id}.parquet"), rows=[], verdicts={})


def pytest_generate_tests(metafunc):
    if "bench_case" in metafunc.fixturenames:
        cases = grids.benchmarks(metafunc.config.stash[SESSION]["grid"])
        metafunc.parametrize("bench_case", cases, ids=[grids.case_id(*case) for case in cases])


@pytest.fixture(scope="session")
def bench_session(pytestconfig):
    """The session's grid, device, run id, parquet path, rows so far and verification verdicts."""
    return pytestconfig.stash[SESSION]


@pytest.fixture(scope="session")
def run_fields(pytestconfig, bench_session):
    """The columns every row of this run shares: run id, commit, host, device, versions and peaks."""
    return runner.run_fields(bench_session["run_id"], bench_session["grid_name"], bench_session["device"],
                             pytestconfig.rootpath)


@pytest.fixture
def bench_record(request, bench_session, run_fields):
    """record(fields) -> row: one timed case (harness.bench.runner.measure) -> one row appended to the run's parquet
    file, with its rates and bytes-moved floor."""
    def record(fields):
        row = perf_store.with_rates(dict(run_fields, test_id=request.node.nodeid, **fields))
        perf_store.append_row(bench_session["rows"], row, bench_session["path"])
        return row
    return record


def pytest_terminal_summary(terminalreporter, config):
    session = config.stash.get(SESSION, None)
    if session and session["rows"]:
        terminalreporter.write_line(f"benchmark rows: {len(session['rows'])} -> {session['path']}")
