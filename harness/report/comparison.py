"""The comparison section: two benchmark runs case by case, and when a slowdown is a regression rather than noise.

The noise model. A case is a regression only when every one of these holds (faster: the same, mirrored):
  1. both runs timed it at least MIN_ROUNDS times: with n rounds the chance that the true median lies
     outside [fastest, slowest] call is 2 * 0.5**n, under 5 % only from n = 6 on; with fewer rounds
     no interval says where the median is, and the case reads 'too few rounds';
  2. B's median is more than `threshold` above A's (the size of change worth a flag);
  3. B's fastest call is also more than `threshold` above A's: a busy machine delays some calls and
     moves the median, while the fastest call of a run stays near the kernel's own speed;
  4. the change is larger than each run's spread: its relative IQR (iqr_s / median_s) on this case, or
     the run's median relative IQR over all its cases if larger (an IQR of a few calls can be small
     by luck; a case is taken to be no quieter than the run's typical case);
  5. the change is significant: |ln(B / A)| > z * sqrt(se_a**2 + se_b**2 + between**2), where
     se = 1.2533 * (spread / 1.349) / sqrt(rounds) is the standard error of a median of normal calls
     (sigma = IQR / 1.349); `between` is the run-to-run noise of this pair, 1.4826 * the median absolute
     deviation of ln(B / A) over the cases (a busy machine moves whole cases between runs, by amounts no
     IQR within a run shows; the median keeps a minority of real changes from inflating it); and z is
     Bonferroni's for FAMILY_ERROR over the cases compared (3.0 for 18 cases, 3.8 for 300): two runs of
     the same code show any regression with a chance under 5 %, however many cases they hold.
A case past the threshold that fails 3, 4 or 5 is 'noise'; one whose median is missing is 'unmeasured'.
tests/test_report_noise.py checks this on simulated runs of the same code and on a real 30 % slowdown.
"""
import math
from statistics import NormalDist

import numpy as np

from int4_lora_harness.bench import store as perf_store
from int4_lora_harness.report.cli import REGRESSION_THRESHOLD  # the flag's default lives with the flag
from int4_lora_harness.report import targets
from int4_lora_harness.report.noise import MIN_ROUNDS, relative_spread, typical_spread
from int4_lora_harness.report.performance import UnknownRun, case_label, is_cpu, run_table, text

FAMILY_ERROR = 0.05  # the chance that two runs of the same code show any regression or speedup at all
MEDIAN_SE = 1.2533 / 1.349  # se of a median = 1.2533 sigma / sqrt(n) (normal calls); sigma = IQR / 1.349
VERDICTS = ("regression", "faster", "noise", "too few rounds", "unmeasured", "same")


def resolve(runs, name):
    """A --compare argument -> a run id: `name` itself when a run has that id, else the newest run that timed
    the TARGET `name` (tidied as report.targets.bench_target does). UnknownRun naming what there is otherwise."""
    if name in set(runs["run_id"]):
        return name
    if not isinstance(name, str):
        raise UnknownRun(f"--compare needs two runs or TARGETs, got {name!r}")
    wanted = targets.bench_target(name)
    timed = runs[[wanted in t for t in runs["target_list"]]]
    if timed.empty:
        found = sorted({t for ts in runs["target_list"] for t in ts})
        raise UnknownRun(f"--compare: no benchmark run or TARGET {name!r}; the runs found: "
                         f"{', '.join(runs['run_id']) or 'none'}; the TARGETs timed: {', '.join(found) or 'none'}")
    return timed["run_id"].iloc[0]


def pick_runs(bench, run_a=None, run_b=None):
    """(older run, newer run) to compare: the given pair (run ids or TARGETs: resolve), else the newest two runs
    that share a device and timed the same TARGETs (two kernels are never read as two versions of one).

    None when there is no such pair; UnknownRun when a given name is neither a run nor a TARGET in `bench`.
    """
    runs = run_table(bench)  # newest first
    if run_a is not None or run_b is not None:
        return resolve(runs, run_a), resolve(runs, run_b)
    for i, newer in runs.iterrows():
        later = runs.loc[i + 1:]
        older = later[(later["device_name"] == newer["device_name"]) & (later["targets"] == newer["targets"])]
        if not older.empty:
            return older["run_id"].iloc[0], newer["run_id"]
    return None


def matched_targets(bench, run_a, run_b):
    """(bench with each run's one TARGET renamed 'A -> B' when the two runs timed different ones, so that their
    cases meet; the label, or None when the runs timed the same TARGETs or not one each)."""
    ta, tb = (targets.bench_targets(bench.loc[bench["run_id"] == run, "backend"].astype(str).unique())
              for run in (run_a, run_b))
    if ta == tb or len(ta) != 1 or len(tb) != 1:
        return bench, None
    label = f"{ta[0]} → {tb[0]}"
    tidied = bench["backend"].astype(str).map(targets.bench_target)
    renamed = bench.copy()
    for run, target in ((run_a, ta[0]), (run_b, tb[0])):
        renamed.loc[(bench["run_id"] == run) & (tidied == target), "backend"] = label
    return renamed, label


def spread(compared, side):
    """Per case, run `side`'s relative spread: its relative IQR, or the run's median relative IQR if larger."""
    iqr, median = compared[f"iqr_s_{side}"], compared[f"median_s_{side}"]
    return relative_spread(iqr, median, typical_spread(iqr, median))


def between_runs(log_ratio):
    """The run-to-run noise of a pair: 1.4826 * MAD of ln(B / A) over its measured cases (sigma for normal noise)."""
    log_ratio = log_ratio[np.isfinite(log_ratio)]
    return 1.4826 * float(np.median(np.abs(log_ratio - np.median(log_ratio)))) if len(log_ratio) else 0.0


def critical_z(cases, family_error=FAMILY_ERROR):
    """Bonferroni's two-sided z for `cases` comparisons at `family_error` overall."""
    return NormalDist().inv_cdf(1 - family_error / (2 * max(1, cases)))


def comparison(bench, run_a, run_b, threshold=REGRESSION_THRESHOLD, min_rounds=MIN_ROUNDS):
    """perf_store.compare(run_a -> run_b) plus time_ratio = b / a, min_ratio (of the fastest calls), the larger
    spread of the two runs, z (the change over its standard error) and a verdict per case by the module's
    noise model; sorted slowest ratio first. compared.attrs["between"]: the pair's run-to-run noise."""
    bench, _ = matched_targets(bench, run_a, run_b)
    compared = perf_store.compare(bench, run_a, run_b)
    ratio = compared["median_s_b"] / compared["median_s_a"]
    measured = np.isfinite(ratio) & (ratio > 0)
    min_ratio = compared["min_s_b"] / compared["min_s_a"]
    min_ratio = min_ratio.where(np.isfinite(min_ratio) & (min_ratio > 0), ratio)  # no fastest call: the medians
    change = (ratio - 1).where(ratio >= 1, 1 / ratio - 1)  # the size of the change either way, as a fraction
    spread_a, spread_b = spread(compared, "a"), spread(compared, "b")
    rounds_a, rounds_b = compared["rounds_a"].fillna(0), compared["rounds_b"].fillna(0)
    log_ratio = np.log(ratio.where(measured))
    se = np.sqrt(MEDIAN_SE ** 2 * (spread_a ** 2 / rounds_a.clip(lower=1) + spread_b ** 2 / rounds_b.clip(lower=1))
                 + between_runs(log_ratio) ** 2)
    z = np.abs(log_ratio) / se.where(se > 0, 1e-12)
    slower, faster = measured & (ratio > 1 + threshold), measured & (ratio < 1 / (1 + threshold))
    fastest_moved = np.where(slower, min_ratio > 1 + threshold, min_ratio < 1 / (1 + threshold))
    confirmed = fastest_moved & (change > np.maximum(spread_a, spread_b)) & (z > critical_z(int(measured.sum())))
    compared["verdict"] = np.select(
        [~measured, (slower | faster) & (np.minimum(rounds_a, rounds_b) < min_rounds), slower & confirmed,
         faster & confirmed, slower | faster], ["unmeasured", "too few rounds", "regression", "faster", "noise"],
        "same")
    compared["time_ratio"], compared["min_ratio"] = ratio, min_ratio
    compared["relative_iqr"], compared["z"] = np.maximum(spread_a, spread_b), z
    compared = compared.sort_values("time_ratio", ascending=False, ignore_index=True, na_position="last")
    compared.attrs["between"] = between_runs(log_ratio)
    return compared


def compare_section(bench, run_a, run_b, threshold, max_rows):
    """The section's context: (dict | None, notes); the dict names each run's TARGETs (targets), whether they
    differ (different: only when --compare named them) and the label their rows met under (matched).
    UnknownRun for a given name that is neither a run id nor a TARGET of `bench`."""
    pair = pick_runs(bench, run_a, run_b)
    if pair is None:
        return None, []
    try:
        compared = comparison(bench, *pair, threshold)
    except ValueError as error:  # perf_store.compare refuses duplicated cases: say so
        return None, [f"comparison of {pair[0]} and {pair[1]}: {error}"]
    between = compared.attrs["between"]
    _, matched = matched_targets(bench, *pair)
    compared["case"] = compared.apply(case_label, axis=1) if len(compared) else []
    counts = compared["verdict"].value_counts()
    runs = run_table(bench).set_index("run_id")
    ratios = compared["time_ratio"][np.isfinite(compared["time_ratio"]) & (compared["time_ratio"] > 0)]
    only = {run: int((bench["run_id"] == run).sum()) - len(compared) for run in pair}  # rows with no partner
    dirty = [run for run in pair if runs.loc[run, "git_dirty"]]
    cpu = is_cpu(bench[bench["run_id"].isin(pair)])
    return dict(run_a=pair[0], run_b=pair[1], threshold=threshold, min_rounds=MIN_ROUNDS, cases=len(compared),
                z=critical_z(int(np.isfinite(compared["z"]).sum())), between=math.expm1(between),
                counts={v: int(counts.get(v, 0)) for v in VERDICTS},
                commits={run: text(runs.loc[run, "git_commit"]) for run in pair}, dirty=dirty, cpu=cpu,
                targets={run: runs.loc[run, "targets"] for run in pair}, matched=matched,
                different=runs.loc[pair[0], "target_list"] != runs.loc[pair[1], "target_list"],
                devices={run: runs.loc[run, "device_name"] for run in pair},
                geomean=float(np.exp(np.log(ratios).mean())) if len(ratios) else math.nan, only=only,
                rows=compared.head(max_rows).to_dict("records"), left_out=max(0, len(compared) - max_rows)), []
