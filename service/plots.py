"""Pictures for people: a backtest as actual base load against the forecast band, the limit and
the capacity that would have been handed out (matplotlib, no display needed)."""

from pathlib import Path

import pandas as pd


def plot_backtest(frame: pd.DataFrame, path: Path, *, title: str, unit: str) -> None:
    """Write a PNG of a backtest frame (columns actual, p50, lower, upper, limit, available)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no screen on servers
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(14, 5), dpi=100)
    try:
        index = frame.index
        axes.fill_between(index, frame["lower"], frame["upper"], color="tab:blue", alpha=0.2, label="forecast band")
        axes.plot(index, frame["p50"], color="tab:blue", linewidth=0.8, label="forecast P50")
        axes.plot(index, frame["actual"], color="black", linewidth=0.8, label="actual base load")
        axes.plot(index, frame["limit"], color="tab:red", linewidth=1.2, label="limit")
        axes.plot(index, frame["available"], color="tab:green", linewidth=0.8, label="available (handed out)")
        axes.set_title(title)
        axes.set_ylabel(unit)
        axes.set_xlabel("time (UTC)")
        axes.legend(loc="upper left", fontsize="small", ncols=5)
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
