"""The holdings chart of a played scenario: the protocol's value block by block, with the attack transactions,
the trip and the pause marked where they landed (a block, and the position in it)."""

from __future__ import annotations

from pathlib import Path

from onguard.replay.runner import ReplayReport

POSITION_STEP = 0.08  # of a block, per position in it: a pause ahead of the attack in one block is drawn ahead


def holdings_chart(report: ReplayReport, path: Path) -> bool:
    """Writes the chart (PNG or SVG by the file's suffix); False when there is nothing to draw."""
    if not report.holdings:
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5))
    blocks = [p.block for p in report.holdings]
    values = [p.usd for p in report.holdings]
    axes.step(blocks, values, where="post", color="tab:blue", label="holdings (USD)")
    top = max(values) if any(values) else 1.0
    for index, tx in enumerate(report.attack_txs):
        axes.scatter(tx.block + tx.position * POSITION_STEP, top * 1.04,
                     marker="v" if tx.succeeded else "x", color="tab:red",
                     label=("attack (x: reverted)" if index == 0 else None), zorder=3)
    for index, trip in enumerate(report.trips):
        axes.axvline(trip.block, color="tab:orange", linestyle="--",
                     label=(f"trip: {trip.policy_id} ({trip.path})" if index == 0 else None))
    for index, response in enumerate(r for r in report.responses if r.block is not None):
        axes.scatter(response.block + (response.position or 0) * POSITION_STEP, top * 1.08, marker="^",
                     color="tab:green", label=(f"pause {response.action} ({response.status})" if index == 0 else None),
                     zorder=3)
    axes.set_xlabel("block")
    axes.set_ylabel("USD held")
    axes.set_ylim(bottom=0, top=top * 1.15)
    axes.set_title(f"{report.scenario}: {report.outcome}")
    axes.legend(loc="lower left", fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True
