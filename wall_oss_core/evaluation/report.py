"""Plots and the HTML report of an evaluation (matplotlib, Agg: works with no display).

Per arm: the recorded end-effector trajectory (forward kinematics of the joint states) with every
predicted chunk drawn over it, colored by the time of its instant — x/y/z over time, and a top-down
x-y path (the same view rviz gives on a live run) — plus the gripper opening and the position error
along the horizon.
"""
from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from wall_oss_core.robot.config import RobotConfig  # noqa: E402


def _instant_colors(count: int):
    return plt.get_cmap("viridis")(np.linspace(0.0, 1.0, max(count, 1)))


def write_plots(result, plot_dir: Path, robot: RobotConfig) -> list[Path]:
    plot_dir.mkdir(parents=True, exist_ok=True)
    instants = result.comparison.instants
    colors = _instant_colors(len(instants))
    written = []
    for arm in robot.arms:
        name = arm.name
        times, positions = result.recorded_ee[name]
        origin = times[0] if len(times) else 0.0
        figure, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
        for axis, label in enumerate("xyz"):
            ax = axes[axis]
            ax.plot(times - origin, positions[:, axis], color="black", linewidth=1.5, label="recorded")
            for color, item in zip(colors, instants):
                ax.plot(item.times - origin, item.predicted_poses[name][:, axis, 3], color=color, linewidth=0.8,
                        alpha=0.8)
            ax.set_ylabel(f"{label} [m]")
            ax.grid(alpha=0.3)
        axes[0].plot([], [], color=colors[-1], label="predicted chunks (color: instant time)")
        axes[0].legend(loc="upper right", fontsize=8)
        axes[-1].set_xlabel("time since bag start [s]")
        figure.suptitle(f"{name} arm: end-effector position, predicted vs recorded")
        figure.tight_layout()
        written.append(_save(figure, plot_dir / f"{name}_ee_xyz.png"))

        figure, ax = plt.subplots(figsize=(6, 6))
        ax.plot(positions[:, 0], positions[:, 1], color="black", linewidth=1.5, label="recorded")
        for color, item in zip(colors, instants):
            ax.plot(item.predicted_poses[name][:, 0, 3], item.predicted_poses[name][:, 1, 3], color=color,
                    linewidth=0.8, alpha=0.8)
        box_min, box_max = arm.workspace.min, arm.workspace.max
        ax.add_patch(plt.Rectangle((box_min[0], box_min[1]), box_max[0] - box_min[0], box_max[1] - box_min[1],
                                   fill=False, linestyle="--", edgecolor="gray", label="workspace"))
        ax.set_xlabel("x [m]")
        ax.set_ylabel("y [m]")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"{name} arm: top-down path")
        figure.tight_layout()
        written.append(_save(figure, plot_dir / f"{name}_ee_topdown.png"))

    figure, axes = plt.subplots(2, 1, figsize=(10, 6))
    for arm in robot.arms:
        predicted_t, _, predicted_g = result.comparison.stitched("predicted")
        truth_t, _, truth_g = result.comparison.stitched("truth")
        origin = result.recorded_ee[arm.name][0][0] if len(result.recorded_ee[arm.name][0]) else 0.0
        axes[0].plot(truth_t - origin, truth_g[arm.name], linewidth=1.5, label=f"{arm.name} ground truth")
        axes[0].plot(predicted_t - origin, predicted_g[arm.name], linestyle="--", label=f"{arm.name} predicted")
        by_step = result.metrics["end_effector"][arm.name]["position_error_mm_by_step"]
        axes[1].plot(range(len(by_step)), by_step, marker=".", label=arm.name)
    axes[0].axhline(result.comparison.gripper_threshold, color="gray", linewidth=0.8, linestyle=":")
    axes[0].set_ylabel("gripper [m]")
    axes[0].set_xlabel("time since bag start [s]")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("horizon step")
    axes[1].set_ylabel("mean EE position error [mm]")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    figure.tight_layout()
    written.append(_save(figure, plot_dir / "gripper_and_horizon_error.png"))
    return written


def _save(figure, path: Path) -> Path:
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _format(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _ablation_rows(ablation: dict | None) -> list[str]:
    """Per camera and ablation: mean chunk shift and its ratio to the sampling floor (ablation.py)."""
    if not ablation:
        return []
    floor = ablation["sampling_floor"].get("mean")
    rows = [f"<h2>Camera ablation</h2><p>How far the predicted chunk moves [mean |Δaction|] when one camera's frame "
            f"is replaced; sampling floor (same input, new noise) {_format(floor)}. A ratio near 1 means the policy "
            f"ignores that camera.</p><table><tr><th>camera</th><th>ablation</th><th>mean shift</th>"
            f"<th>ratio to floor</th></tr>"]
    for camera, by_ablation in ablation["cameras"].items():
        for name, summary in by_ablation.items():
            rows.append(f"<tr><td>{html.escape(camera)}</td><td>{html.escape(name)}</td>"
                        f"<td>{_format(summary.get('mean'))}</td><td>{_format(summary.get('ratio_to_floor'))}</td></tr>")
    return rows + ["</table>"]


def write_html_report(metrics: dict, plots: list[Path], path: Path) -> Path:
    """A self-contained page (plots referenced relative to it) summarizing the metrics."""
    coverage = metrics["coverage"]
    rows = []
    rows.append("<h2>Coverage</h2><table>")
    rows.append(f"<tr><td>instants</td><td>{coverage['instants']}</td></tr>"
                f"<tr><td>evaluated</td><td>{coverage['evaluated']}</td></tr>"
                f"<tr><td>skipped</td><td>{coverage['skipped']}</td></tr>")
    for reason, count in coverage["skipped_by_reason"].items():
        rows.append(f"<tr><td>&nbsp;&nbsp;{html.escape(reason)}</td><td>{count}</td></tr>")
    rows.append("</table><h2>End effector</h2><table><tr><th>arm</th><th>position error [mm] mean / median / "
                "p95 / max</th><th>rotation error [deg] mean / median / p95 / max</th></tr>")
    for arm, values in metrics["end_effector"].items():
        cells = []
        for key in ("position_error_mm", "rotation_error_deg"):
            summary = values[key]
            cells.append(" / ".join(_format(summary.get(s)) for s in ("mean", "median", "p95", "max")))
        rows.append(f"<tr><td>{html.escape(arm)}</td><td>{cells[0]}</td><td>{cells[1]}</td></tr>")
    rows.append("</table><h2>Gripper timing</h2><table><tr><th>arm</th><th>recorded events</th>"
                "<th>predicted events</th><th>matched</th><th>mean |error| [s]</th></tr>")
    for arm, values in metrics["gripper_timing"].items():
        if isinstance(values, dict):
            rows.append(f"<tr><td>{html.escape(arm)}</td><td>{values['recorded_events']}</td>"
                        f"<td>{values['predicted_events']}</td><td>{values['matched']}</td>"
                        f"<td>{_format(values['timing_error_s'].get('mean'))}</td></tr>")
    rows.append("</table><h2>Per dimension</h2><table><tr><th>dimension</th><th>MAE</th><th>RMSE</th></tr>")
    for name, values in metrics["per_dimension"].items():
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{_format(values['mae'])}</td>"
                    f"<td>{_format(values['rmse'])}</td></tr>")
    rows.append("</table>")
    rows += _ablation_rows(metrics.get("camera_ablation"))
    rows.append("<h2>Plots</h2>")
    for plot in plots:
        rows.append(f'<p><img src="{html.escape(plot.relative_to(path.parent).as_posix())}" '
                    f'alt="{html.escape(plot.stem)}"></p>')
    overall = metrics["overall"]
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>wall_oss evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}img{max-width:100%}</style></head><body>"
        f"<h1>Open-loop evaluation</h1><p>bag: <code>{html.escape(str(metrics.get('bag', '')))}</code><br>"
        f"ground truth: {html.escape(str(metrics.get('ground_truth', '')))}, instants: "
        f"{html.escape(str(metrics.get('instant_mode', '')))}, policy action space: "
        f"{html.escape(str(metrics.get('policy_action_space', '')))}<br>"
        f"overall MAE {_format(overall['mae'])}, RMSE {_format(overall['rmse'])} over "
        f"{overall['compared_actions']} actions</p>" + "\n".join(rows) + "</body></html>")
    path.write_text(page)
    return path
