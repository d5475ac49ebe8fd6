"""The report's charts: matplotlib figures rendered to inline SVG strings.

Figures come from matplotlib.figure.Figure, never pyplot: no GUI backend and no global figure
state (headless, like Agg). Text stays text in the SVG, and the output carries no date, so the
same data gives the same bytes.

The names drawn (dtypes, granularities, layers, backends) come from files someone else wrote: every
text from data is drawn LITERAL (no LaTeX, no math text: '$x$' is drawn as the four characters), and
a chart draws at most MAX_PANELS panels and MAX_SERIES series (an error-sample chart MAX_SAMPLE_KINDS of
each); the rest are counted above it.
"""
import io
import math
import re
import zlib

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from int4_lora_harness.report.fmt import fmt_share


def svg(fig, name):
    """A matplotlib Figure as an inline <svg> element whose ids all start with `name`- (unique in the page).

    Text stays text (smaller, searchable, crisp in print); no metadata, no date: the same
    data gives the same SVG.
    """
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "harness-report", "text.usetex": False}):
        fig.savefig(buffer, format="svg", bbox_inches="tight",
                    metadata={"Date": None, "Creator": None, "Type": None, "Format": None})
    text = buffer.getvalue()
    return re.sub(r'(\bid="|href="#|url\(#)', rf"\g<1>{name}-", text[text.index("<svg"):])


def _figure(panels, ncols=3, width=3.6, height=2.7):
    """(Figure, flat list of `panels` axes) in a grid of `ncols` columns; unused axes hidden."""
    ncols = max(1, min(ncols, panels))
    nrows = math.ceil(panels / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, list(axes[:panels])


LITERAL = dict(usetex=False, parse_math=False)  # text from data is drawn as it is: never LaTeX, never math text
# A panel costs ~1 s to draw on a shared CPU: 300 dtypes once kept the page drawing for 400 s.
MAX_PANELS = 24  # layer panels per chart: every layer of shapes.LAYER_SHAPES (18) fits
MAX_SERIES = 24  # backend and operation pairs per chart: 6 backends x 3 operations fit
MAX_SAMPLE_KINDS = 6  # dtypes (panels) and granularities (series) per error-sample chart: verify records 3 of each


def literal(legend):
    """`legend` with its labels drawn LITERAL (a legend takes no text properties of its own)."""
    for text in legend.get_texts():
        text.update(LITERAL)
    return legend


def capped(names, limit, what):
    """(the first `limit` of `names`, '<n> more <what> not drawn' | None)."""
    names = list(names)
    return names[:limit], (f"{len(names) - limit} more {what} not drawn (at most {limit} per chart)"
                           if len(names) > limit else None)


def say_left_out(fig, *notes):
    """The notes of what a chart left out, as one line above it (none when nothing was left out)."""
    notes = [note for note in notes if note]
    if notes:
        fig.suptitle("; ".join(notes), fontsize=8, color="0.35", **LITERAL)


OPERATION_STYLE = {"gemm_lora": "-", "gemm": "--", "dequantize": ":"}
OPERATION_MARKER = {"gemm_lora": "o", "gemm": "s", "dequantize": "^"}

# One colour per backend on every chart of the page (and the swatches of its tables). Others get a
# colour of PALETTE chosen by a hash of the name: the same name, the same colour, on every page.
BACKEND_COLOURS = {"reference": "#7f7f7f", "torch": "#1f77b4", "triton": "#d62728", "triton-ptx": "#ff7f0e",
                   "dense": "#2ca02c", "materialize": "#9467bd"}
PALETTE = ["#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39"]
GRANULARITY_COLOURS = {"grouped": "#1f77b4", "per-channel": "#ff7f0e", "per-tensor": "#2ca02c"}


def backend_colour(name):
    """The colour of backend `name` on every chart: BACKEND_COLOURS, else a PALETTE entry fixed by the name."""
    return BACKEND_COLOURS.get(name) or PALETTE[zlib.crc32(str(name).encode()) % len(PALETTE)]


def granularity_colour(name):
    return GRANULARITY_COLOURS.get(name) or PALETTE[zlib.crc32(str(name).encode()) % len(PALETTE)]


def drawable(rows, y, log_y):
    """The rows a chart can draw: finite y (and positive on a log axis), positive M."""
    keep = np.isfinite(rows[y].astype(float)) & (rows["m"].astype(float) > 0)
    return rows[keep & (rows[y] > 0)] if log_y else rows[keep]


def small_multiples(rows, y, ylabel, name, log_y=True, reference=None, noise=None):
    """One panel per layer, `y` against M, one colour per backend (gemm_lora solid, gemm dashed); None when
    no row can be drawn. noise: a boolean column; its points are drawn hollow (timing noise, not a result)."""
    rows = drawable(rows[rows["m"].notna()], y, log_y)
    if rows.empty:
        return None
    layers, layers_left_out = capped(sorted(rows["layer"].unique()), MAX_PANELS, "layers")
    pairs, pairs_left_out = capped(sorted(set(zip(rows["backend"], rows["operation"]))), MAX_SERIES,
                                   "backend and operation pairs")
    drawn = set(pairs)
    rows = rows[[pair in drawn for pair in zip(rows["backend"], rows["operation"])]]
    fig, axes = _figure(len(layers))
    say_left_out(fig, layers_left_out, pairs_left_out)
    for ax, layer in zip(axes, layers):
        for (backend, operation), line in rows[rows["layer"] == layer].groupby(["backend", "operation"]):
            line = line.sort_values("m")
            colour = backend_colour(backend)
            ax.plot(line["m"], line[y], OPERATION_STYLE.get(operation, "-."), marker="o", markersize=3,
                    color=colour, label=f"{backend} {operation}")
            if noise is not None and line[noise].any():
                flagged = line[line[noise]]
                ax.scatter(flagged["m"], flagged[y], s=40, facecolors="white", edgecolors=colour, zorder=3,
                           label="noise (hollow)")
        if reference is not None:
            ax.axhline(reference, color="0.4", linewidth=0.8)
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(layer, fontsize=9, **LITERAL)
        ax.set_xlabel("M (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    handles = {}  # label -> the first line drawn with it: one legend for all panels
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    literal(fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                       ncols=max(1, min(4, len(handles))), fontsize=8, frameon=False))
    return svg(fig, name)


def roofline_chart(rows):
    """Achieved TFLOP/s against FLOP per byte moved, under the device's bandwidth and compute ceilings; None when
    no row has positive bytes, FLOPs and rate."""
    rate = rows["achieved_tflops"].astype(float)
    rows = rows[(rows["bytes_moved"] > 0) & (rows["flops"] > 0) & np.isfinite(rate) & (rate > 0)]
    if rows.empty:
        return None
    intensity = rows["flops"] / rows["bytes_moved"]
    fig = Figure(figsize=(9.5, 4.5), layout="constrained")
    ax = fig.subplots()
    groups, left_out = capped(rows.groupby(["backend", "operation"]), MAX_SERIES, "backend and operation pairs")
    say_left_out(fig, left_out)
    for (backend, operation), points in groups:
        ax.scatter(intensity[points.index], points["achieved_tflops"], s=18, color=backend_colour(backend),
                   marker=OPERATION_MARKER.get(operation, "x"), label=f"{backend} {operation}", alpha=0.8)
    peak_gbps, peak_tflops = rows["peak_gbps"].max(), rows["peak_tflops"].max()
    x = np.logspace(np.log10(intensity.min() / 2), np.log10(intensity.max() * 2), 200)
    if np.isfinite(peak_gbps) and peak_gbps > 0:
        roof = peak_gbps * x / 1e3  # GB/s * FLOP/B = GFLOP/s
        if np.isfinite(peak_tflops):
            roof = np.minimum(roof, peak_tflops)
        ax.plot(x, roof, color="k", linewidth=1.2, label=f"ceiling: {peak_gbps:.0f} GB/s"
                + (f", {peak_tflops:.0f} TFLOP/s" if np.isfinite(peak_tflops) else " (no compute peak)"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.grid(True, which="major", alpha=0.3)
    literal(fig.legend(fontsize=7, loc="outside right upper", frameon=False))
    return svg(fig, "roofline")


def _sample_figure(samples):
    """(dtypes, granularities, Figure, axes) of an error-sample chart: one panel per dtype (at most
    MAX_SAMPLE_KINDS), one series per granularity (at most MAX_SAMPLE_KINDS); what is left out is said above it."""
    dtypes, dtypes_left_out = capped(dict.fromkeys(samples["dtype"]), MAX_SAMPLE_KINDS, "dtypes")
    granularities, left_out = capped(dict.fromkeys(samples["granularity"]), MAX_SAMPLE_KINDS, "granularities")
    fig, axes = _figure(len(dtypes), width=3.4, height=2.6)
    say_left_out(fig, dtypes_left_out, left_out)
    return dtypes, granularities, fig, axes


ULP_BINS = ["0", "1", "2", "3+", "NaN"]


def ulp_shares(ulps):
    """Share of elements 0, 1, 2, 3+ ulps away, and NaN, of one sample (float array)."""
    finite = np.isfinite(ulps)
    counts = [np.sum(ulps == 0), np.sum(ulps == 1), np.sum(ulps == 2), np.sum(finite & (ulps >= 3)), np.sum(~finite)]
    return np.array(counts) / max(1, ulps.size)


def ulps_chart(samples, title, name):
    """Dequantizer: share of sampled elements 0, 1, 2, 3+ ulps from the correctly rounded value, one panel per
    dtype, one bar per granularity. samples: rows of dtype, granularity, ulps (one per element)."""
    dtypes, granularities, fig, axes = _sample_figure(samples)
    width = 0.8 / max(1, len(granularities))
    for ax, dtype in zip(axes, dtypes):
        for j, granularity in enumerate(granularities):
            ulps = samples.loc[(samples["dtype"] == dtype) & (samples["granularity"] == granularity), "ulps"]
            if ulps.size == 0:
                continue
            ax.bar(np.arange(len(ULP_BINS)) + (j - (len(granularities) - 1) / 2) * width,
                   ulp_shares(ulps.to_numpy(dtype=float)), width, color=granularity_colour(granularity),
                   label=granularity)
        ax.axvline(1.5, color="C3", linewidth=1, linestyle="--")
        ax.text(1.55, 0.5, "allowed: 1 ulp", color="C3", fontsize=7, transform=ax.get_xaxis_transform())
        ax.set_xticks(range(len(ULP_BINS)), ULP_BINS)
        ax.set_yscale("log")
        ax.set_ylim(1e-4, 2)
        ax.set_title(f"{title}, {dtype}", fontsize=9, **LITERAL)
        ax.set_xlabel("ulps from RN(exact)")
        ax.set_ylabel("share of sampled elements")
        literal(ax.legend(fontsize=7, frameon=False))
    return svg(fig, name)


RATIO_EDGES = np.arange(-8.0, 1.01, 0.25)  # log10(error / allowed); 0 is the bound


def ratio_chart(samples, title, name):
    """Linear (and layer): histogram of error / allowed on a log axis, one panel per dtype, one step line per
    granularity; the bound at 1. samples: rows of dtype, granularity, ratio (one per element)."""
    dtypes, granularities, fig, axes = _sample_figure(samples)
    for ax, dtype in zip(axes, dtypes):
        notes = []
        for granularity in granularities:
            ratio = samples.loc[(samples["dtype"] == dtype) & (samples["granularity"] == granularity),
                                "ratio"].to_numpy(dtype=float)
            if ratio.size == 0:
                continue
            positive = ratio[ratio > 0]  # inf included: drawn in the last bin, past the bound (NaN is not > 0)
            counts, _ = np.histogram(np.clip(np.log10(positive), RATIO_EDGES[0], RATIO_EDGES[-1]), RATIO_EDGES)
            ax.stairs(counts / ratio.size, 10 ** RATIO_EDGES, color=granularity_colour(granularity), label=granularity)
            infinite = int(np.isinf(ratio).sum())
            notes.append(f"{granularity}: {fmt_share(int((ratio == 0).sum()), ratio.size)} exact*"
                         + (f", {infinite} inf" if infinite else ""))
        ax.axvline(1.0, color="C3", linewidth=1, linestyle="--")
        ax.text(0.97, 0.97, "\n".join(notes), fontsize=6, ha="right", va="top", transform=ax.transAxes, **LITERAL)
        ax.set_xscale("log")
        ax.set_ylim(1e-4, 2)  # before the log scale: a panel of exact results only has no positive count to fit
        ax.set_yscale("log")
        ax.set_title(f"{title}, {dtype}", fontsize=9, **LITERAL)
        ax.set_xlabel("error / allowed (bound at 1)")
        ax.set_ylabel("share of sampled elements")
        literal(ax.legend(fontsize=7, frameon=False, loc="upper left"))
    return svg(fig, name)


def memory_chart(per_layer):
    """Horizontal bars: packed vs materialized fp16 MiB per layer shape."""
    fig = Figure(figsize=(7.5, 0.45 * len(per_layer) + 1.0), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(per_layer))
    ax.barh(y + 0.2, per_layer["fp16_bytes"] / 2**20, 0.4, color="C3", label="materialized fp16")
    ax.barh(y - 0.2, per_layer["packed_bytes"] / 2**20, 0.4, color="C0", label="packed INT4 + fp16 scales (g128)")
    ax.set_yticks(y, per_layer["layer"], **LITERAL)
    ax.invert_yaxis()
    ax.set_xlabel("MiB per layer")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    return svg(fig, "memory")
