#!/usr/bin/env python3
"""Plots of a `sparge run` results directory, for the results people would rather look at than read.

  scripts/plot_results.py RESULTS_DIR [RESULTS_DIR ...]

Writes into each directory, from its results.json:
  sparsity_vs_error.png/.svg   token-level or stage-1 sparsity (or P.V sparsity) vs relative L1, one point per method and
                               one panel per sweep point, with the stderr as error bars, when both metrics were measured;
  throughput.png/.svg          dense-equivalent TOPS per (sweep point, method), when `tops` was measured;
  throughput_vs_sparsity.png/.svg  TOPS against token-level (or stage-1) sparsity, one panel per sweep point, when
                               both were measured;
  metrics.png/.svg             otherwise, one bar panel per metric;
  niah_heatmaps.png/.svg       needle-in-a-haystack score per (context length, depth), from heatmap_*.json.
Needs matplotlib (Debian's python3-matplotlib, installed by scripts/setup.sh); no torch.
"""
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def natural(text):
    """Sort key reading digit runs as numbers ("seq=8192" before "seq=16384")."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def sweep_points(results):
    """The (point, results by method) pairs in natural order of the point labels."""
    return sorted(results["results"].items(), key=lambda kv: natural(kv[0]))


def rows(results):
    for point, by_method in sweep_points(results):
        for method, values in by_method.items():
            label = method if point == "default" else f"{method} [{point}]"
            yield label, values


def value(values, name):
    v = values.get(name)
    return float("nan") if v is None else v


def save(fig, out_dir, name):
    for ext in ("png", "svg"):
        fig.savefig(os.path.join(out_dir, f"{name}.{ext}"), dpi=130, bbox_inches="tight")
    plt.close(fig)
    return name


def family(method):
    """The method family: the id before the first "_" (sparge_top50 -> sparge)."""
    return method.split("_")[0]


def plot_vs_sparsity(results, out_dir, title, sparsity, metric, ylabel, name):
    """`metric` against sparsity, one point per method (error bars: stderr), one panel per sweep point; one color per
    method family, markers telling its settings apart."""
    points = sweep_points(results)
    families = sorted({family(m) for _, by_method in points for m in by_method})
    colors = {f: plt.cm.tab10(i % 10) for i, f in enumerate(families)}
    markers = "os^Dvp*hX<>"
    fig, axes = plt.subplots(1, len(points), figsize=(6.4 if len(points) == 1 else 5.2 * len(points), 4.2),
                             squeeze=False, sharey=True)
    for ax, (point, by_method) in zip(axes[0], points):
        seen = {}
        for method, v in by_method.items():
            x = value(v, sparsity)
            if sparsity == "pv_density":
                x = 1.0 - x
            f = family(method)
            k = seen[f] = seen.get(f, -1) + 1
            ax.errorbar(x, value(v, metric), yerr=v.get(f"{metric}_stderr") or 0.0,
                        fmt=markers[k % len(markers)], color=colors[f], capsize=3, label=method)
        ax.set_xlabel({"token_sparsity": "token-level sparsity (1 - computed / allowed pairs)",
                       "stage1_sparsity": "stage-1 sparsity"}.get(sparsity, "P.V sparsity (1 - P.V density)"))
        ax.set_title(title if len(points) == 1 else point, fontsize=10 if len(points) == 1 else 9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[0][0].set_ylabel(ylabel)
    if len(points) > 1:
        fig.suptitle(title)
    return save(fig, out_dir, name)


def plot_dir(out_dir):
    with open(os.path.join(out_dir, "results.json")) as f:
        results = json.load(f)
    names = [m["name"] for m in results["metrics"]]
    title = results["config"]["name"] + (f" ({results['reproduces']})" if results.get("reproduces") else "")
    made = []
    # Token-level sparsity is comparable across methods with different block sizes: preferred when present.
    sparsity = next((n for n in ("token_sparsity", "stage1_sparsity") if n in names), None)
    if sparsity is None and "pv_density" in names:
        sparsity = "pv_density"
    if sparsity and "relative_l1" in names:
        made.append(plot_vs_sparsity(results, out_dir, title, sparsity, "relative_l1",
                                     "relative L1 vs dense (lower is better)", "sparsity_vs_error"))
    if "tops" in names and sparsity and sparsity != "pv_density":
        made.append(plot_vs_sparsity(results, out_dir, title, sparsity, "tops",
                                     "dense-equivalent TOPS, estimation included (higher is better)",
                                     "throughput_vs_sparsity"))
    if "tops" in names:
        labels, tops = zip(*[(label, value(v, "tops")) for label, v in rows(results)])
        fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.35 * len(labels)))
        ax.barh(labels, tops)
        ax.set_xlabel("dense-equivalent TOPS (higher is better)")
        ax.set_title(title)
        made.append(save(fig, out_dir, "throughput"))
    if not made:
        labels = [label for label, _ in rows(results)]
        fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 0.8 + 0.35 * len(labels)), squeeze=False)
        for ax, name in zip(axes[0], names):
            ax.barh(labels, [value(v, name) for _, v in rows(results)])
            ax.set_title(name, fontsize=9)
            ax.tick_params(labelsize=7)
        fig.suptitle(title)
        made.append(save(fig, out_dir, "metrics"))
    made += plot_heatmaps(out_dir)
    return made


def plot_heatmaps(out_dir):
    """Needle-in-a-haystack heatmaps (heatmap_<point>_<method>.json): context length x depth, score 0..1."""
    files = sorted(f for f in os.listdir(out_dir) if f.startswith("heatmap_") and f.endswith(".json"))
    if not files:
        return []
    fig, axes = plt.subplots(1, len(files), figsize=(3.6 * len(files), 3.4), squeeze=False)
    for ax, name in zip(axes[0], files):
        with open(os.path.join(out_dir, name)) as f:
            h = json.load(f)
        grid = [[float("nan") if s is None else s for s in row] for row in h["scores"]]
        # rows: depths (top = 0%), columns: lengths
        data = [[grid[li][di] for li in range(len(h["lengths"]))] for di in range(len(h["depths"]))]
        im = ax.imshow(data, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(h["lengths"])), [str(x) for x in h["lengths"]], fontsize=7, rotation=45)
        ax.set_yticks(range(len(h["depths"])), [f"{d}%" for d in h["depths"]], fontsize=7)
        ax.set_xlabel("context length (tokens)", fontsize=8)
        ax.set_ylabel("needle depth", fontsize=8)
        ax.set_title(f"{name[len('heatmap_'):-5]}: {h['overall']:.3f}", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    return [save(fig, out_dir, "niah_heatmaps")]


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    for d in sys.argv[1:]:
        made = plot_dir(d)
        print(f"{d}: " + ", ".join(f"{m}.png/.svg" for m in made))
    return 0


if __name__ == "__main__":
    sys.exit(main())
