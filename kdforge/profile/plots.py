"""The report's figures: accuracy against latency and against MACs with the Pareto front marked,
each student's cost per layer, and the training curves of the teacher and the students. PNG
files, also embedded in report.html."""

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from kdforge.atomic import atomic_path  # noqa: E402


def pareto_front(points: list[tuple[float, float]], tied: Callable[[int, int], bool] | None = None) -> list[int]:
    """Indices of the points no other point beats on cost (x, lower is better) and accuracy (y).
    `tied(i, j)` says whether two costs are within the noise of each other (default: equal); point j
    beats point i when it is at least as accurate, not costlier beyond the noise, and better in one:
    more accurate, or cheaper beyond the noise."""
    tied = tied or (lambda i, j: points[i][0] == points[j][0])

    def beats(j: int, i: int) -> bool:
        same_cost = tied(i, j)
        cheaper = points[j][0] < points[i][0] and not same_cost
        return points[j][1] >= points[i][1] and (cheaper or (same_cost and points[j][1] > points[i][1]))

    front = [i for i in range(len(points)) if not any(beats(j, i) for j in range(len(points)) if j != i)]
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def training_curves_plot(histories: dict[str, list[dict]], path: Path) -> Path:
    """Training loss (all terms summed) and validation accuracy per epoch, one line per network."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.cm.tab20.colors  # up to 20 networks without a repeated colour
    for i, (name, history) in enumerate(histories.items()):
        epochs = [h["epoch"] + 1 for h in history]
        style = {"label": name, "color": colors[i % len(colors)], "linestyle": "--" if name.startswith("teacher") else "-"}
        loss_ax.plot(epochs, [h["loss"] for h in history], **style)
        acc_ax.plot(epochs, [h["val_accuracy"] * 100 for h in history], **style)
    loss_ax.set_yscale("log")
    loss_ax.set(xlabel="epoch", ylabel="training loss (sum of terms)")
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy (%)")
    acc_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the plot, off the curves
    return _save(fig, path)


def tradeoff_plot(rows: list[dict], cost_key: str, cost_label: str, path: Path, front: list[int] | None = None,
                  intervals: list[tuple[float, float]] | None = None, accuracy_key: str = "test_accuracy") -> Path:
    """Accuracy against a cost, the Pareto front marked (`front`, by default the exact one), each
    cost's noise interval drawn as a horizontal bar where given. Students at one point share a
    label; labels are moved apart (adjustText) so that close points stay readable."""
    from adjustText import adjust_text

    points = [(r[cost_key], r[accuracy_key] * 100) for r in rows]
    front = pareto_front(points) if front is None else front
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if intervals:
        errors = [[x - lo for (x, _), (lo, _) in zip(points, intervals)], [hi - x for (x, _), (_, hi) in zip(points, intervals)]]
        ax.errorbar([p[0] for p in points], [p[1] for p in points], xerr=errors, fmt="none", ecolor="tab:gray",
                    alpha=0.6, capsize=2, label="latency noise (ties)")
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", zorder=3)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="tab:red", marker="o", label="Pareto front",
            zorder=4)
    texts = [ax.text(x, y, label, fontsize=7) for (x, y), label in _labels(rows, points).items()]
    xs = [p[0] for p in points if p[0] > 0]
    ys = [p[1] for p in points]
    ax.set_ylim(min(ys) - 1.5, max(ys) + 1.5)  # room for the labels of the top and bottom points
    if xs and max(xs) > 10 * min(xs):  # costs an order of magnitude apart: equal steps by ratio
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.3, max(xs) * 1.3)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.set_xlabel(cost_label)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    adjust_text(texts, x=[p[0] for p in points], y=[p[1] for p in points], ax=ax, expand=(1.3, 1.8), force_text=(0.4, 0.8), max_move=(30, 30),
                arrowprops={"arrowstyle": "-", "color": "tab:gray", "lw": 0.5})
    return _save(fig, path)


def _labels(rows: list[dict], points: list[tuple[float, float]]) -> dict[tuple[float, float], str]:
    """One label per cluster of points (costs within 10% and accuracies within 5% of the plot's
    range of each other): a single point's students, or, for several accuracies, a line per
    accuracy, most accurate first, anchored at the cluster's most accurate point."""
    ys = [y for _, y in points]
    span = (max(ys) - min(ys)) or 1.0
    clusters: list[list[int]] = []
    for i, (x, y) in enumerate(points):
        near = lambda j: abs(points[j][0] - x) <= 0.1 * max(abs(points[j][0]), abs(x)) and abs(points[j][1] - y) <= 0.05 * span  # noqa: E731
        cluster = next((c for c in clusters if any(near(j) for j in c)), None)
        if cluster is None:
            clusters.append([i])
        else:
            cluster.append(i)
    labels = {}
    for members in clusters:
        by_accuracy: dict[float, list[str]] = {}
        for i in sorted(members, key=lambda i: -points[i][1]):
            by_accuracy.setdefault(points[i][1], []).append(rows[i]["student"])
        top = max(members, key=lambda i: points[i][1])
        labels[points[top]] = (", ".join(next(iter(by_accuracy.values()))) if len(by_accuracy) == 1 else
                               "\n".join(f"{', '.join(names)}: {y:.1f}%" for y, names in by_accuracy.items()))
    return labels


def layer_cost_plot(student: str, layers: list[dict], path: Path) -> Path:
    counted = [c for c in layers if c["kind"] in ("conv", "linear", "adder")]
    names = [c["layer"] for c in counted]
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(names)), 4))
    positions = range(len(names))
    ax.bar(positions, [c["mul"] for c in counted], label="multiplications", color="tab:orange")
    ax.bar(positions, [c["add"] for c in counted], bottom=[c["mul"] for c in counted], label="additions", color="tab:blue")
    ax.set_xticks(list(positions), names, rotation=90, fontsize=7)
    ax.set_ylabel("operations per inference")
    ax.set_title(f"{student}: cost per layer")
    ax.legend()
    return _save(fig, path)
