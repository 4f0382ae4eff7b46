"""The report's figures: accuracy against latency and against MACs with the Pareto front marked,
each student's cost per layer, and the training curves of the teacher and the students. PNG
files, also embedded in report.html."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kdforge.atomic import atomic_path  # noqa: E402


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower cost (x) and higher accuracy (y)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


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


def tradeoff_plot(rows: list[dict], cost_key: str, cost_label: str, path: Path) -> Path:
    points = [(r[cost_key], r["test_accuracy"] * 100) for r in rows]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue")
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="tab:red", marker="o", label="Pareto front")
    for r, (x, y) in zip(rows, points):
        ax.annotate(r["student"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(cost_label)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


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
