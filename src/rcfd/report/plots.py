"""The paper's figures with matplotlib, from :mod:`rcfd.report.results` records.

* :func:`reward_distributions` — Figure 3 (left): each method's held-out reward histogram against the
  demonstrations', means marked.
* :func:`loglik_by_position` — Figure 2: reference log-likelihood per generation position.
* :func:`reward_plane` — Figure 4: the sweep's front, the demonstrations' point and RCfD's point. With
  two rewards the plane is (R_1, R_2); with one it is (KL to reference, R), the usual ROO picture.
* :func:`training_curves` — reward, KL, length and distinct-2 per training step.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..eval import metric_names as N  # noqa: E402

DEMO_COLOR, BASE_COLOR, RCFD_COLOR = "black", "0.55", "tab:red"
FAMILY_MAPS = {"beta": plt.cm.Blues, "alpha": plt.cm.Greens}


def run_colors(runs) -> dict:
    """One color per run: base grey, RCfD red, a sweep's runs shaded by their β/α, others tab10."""
    colors, others = {}, iter(plt.cm.tab10(np.linspace(0, 1, 10))[[1, 4, 5, 6, 8, 9, 2, 0, 7, 3]])
    for family, cmap in FAMILY_MAPS.items():
        members = sorted((r for r in runs if r.family == family), key=lambda r: (r.param is None, r.param))
        for i, r in enumerate(members):
            colors[r.name] = cmap(0.35 + 0.6 * i / max(1, len(members) - 1))
    for r in runs:
        if r.name not in colors:
            colors[r.name] = BASE_COLOR if r.family == "base" else RCFD_COLOR if r.family == "rcfd" else next(others, "tab:purple")
    return colors


def _finish(fig, ax_or_axes, title):
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _column(run, reward: str, k: int) -> int | None:
    """Column of ``reward`` in a run's reward samples: its index among the run's rewards, ``k`` (the
    demonstrations' order) when the run names none, None when the run was not scored with it."""
    if not run.reward_names:
        return k
    return run.reward_names.index(reward) if reward in run.reward_names else None


def reward_distributions(runs, demo, colors):
    k_count = len(demo.reward_names)
    fig, axes = plt.subplots(1, k_count, figsize=(6.2 * k_count, 3.8), squeeze=False)
    for k, name in enumerate(demo.reward_names):
        ax = axes[0, k]
        samples = {r.name: np.asarray(r.metrics["reward_samples"])[:, col] for r in runs
                   if r.metrics.get("reward_samples") and (col := _column(r, name, k)) is not None}
        pool = list(samples.values())
        if demo.reward_samples:
            pool.append(np.asarray(demo.reward_samples)[:, k])
        everything = np.concatenate(pool) if pool else np.zeros(1)
        bins = np.linspace(everything.min(), everything.max() + 1e-9, 31)
        if demo.reward_samples:
            d = np.asarray(demo.reward_samples)[:, k]
            ax.hist(d, bins=bins, density=True, color="0.85", edgecolor="0.6", label="demonstrations")
        ax.axvline(demo.reward_means[k], color=DEMO_COLOR, ls="--", lw=1.5, label=f"demo mean {demo.reward_means[k]:.2f}")
        for r in runs:
            if r.name in samples:
                ax.hist(samples[r.name], bins=bins, density=True, histtype="step", lw=1.8, color=colors[r.name],
                        label=f"{r.name} (mean {samples[r.name].mean():.2f})")
                ax.axvline(samples[r.name].mean(), color=colors[r.name], ls=":", lw=1.2)
        ax.set_xlabel(f"reward '{name}' on held-out prompts")
        ax.set_ylabel("density")
        ax.legend(fontsize=7, loc="upper left")
    return _finish(fig, axes, "Reward distributions against the demonstrations (paper, Figure 3 left)")


def _smooth(curve, window: int = 8):
    """Trailing moving average (shorter window at the start): per-position means of a few samples are noisy."""
    c = np.asarray(curve, dtype=float)
    sums = np.cumsum(np.insert(c, 0, 0.0))
    idx = np.arange(1, len(c) + 1)
    lo = np.maximum(0, idx - window)
    return (sums[idx] - sums[lo]) / (idx - lo)


def loglik_by_position(runs, demo, colors, window: int = 8):
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    curves = [(r.name, r.metrics.get("loglik_by_position"), colors[r.name], "-") for r in runs]
    curves.append(("demonstrations", demo.loglik_by_position, DEMO_COLOR, "--"))
    for name, curve, color, style in curves:
        if curve:
            x = np.arange(1, len(curve) + 1)
            ax.plot(x, curve, color=color, lw=0.6, alpha=0.3, ls=style)
            ax.plot(x, _smooth(curve, window), color=color, lw=2, ls=style, label=name)
    if demo.train_tokens:
        ax.axvline(demo.train_tokens, color="0.4", lw=1, ls=":")
        ax.annotate("training length", (demo.train_tokens, ax.get_ylim()[1]), xytext=(4, -10),  # clear of the note
                    textcoords="offset points", fontsize=8, color="0.3", va="top")
    ax.set_xlabel("generation position (tokens)")
    ax.set_ylabel("log-likelihood under the reference (nats/token)")
    ax.text(0.99, 0.02, f"thin: per position; thick: mean of the last {window} positions", transform=ax.transAxes,
            ha="right", va="bottom", fontsize=7, color="0.35")
    ax.legend(fontsize=8, ncol=2)
    return _finish(fig, ax, "Reference log-likelihood by position (paper, Figure 2)")


def reward_plane(runs, demo, colors):
    two = len(demo.reward_names) >= 2
    fig, ax = plt.subplots(figsize=(7.0, 5.0))

    def point(r):
        if two:
            return tuple(r.metrics[f"rewards/{n}/mean"] for n in demo.reward_names[:2])
        return r.metrics.get("kl_to_ref", 0.0), r.metrics["reward_mean"]

    if two:  # a run scored with other rewards (e.g. from another task) has no point on this plane
        runs = [r for r in runs if all(_column(r, n, i) is not None for i, n in enumerate(demo.reward_names[:2]))]

    for family, cmap in FAMILY_MAPS.items():
        members = sorted((r for r in runs if r.family == family and r.param is not None), key=lambda r: r.param)
        if len(members) >= 2:
            xy = np.array([point(r) for r in members])
            ax.plot(xy[:, 0], xy[:, 1], "-", color=cmap(0.7), lw=1.2, zorder=1, label=f"{family} sweep front")
    for r in runs:
        x, y = point(r)
        marker = "*" if r.family == "rcfd" else "s" if r.family == "base" else "o"
        ax.scatter([x], [y], s=170 if marker == "*" else 55, marker=marker, color=colors[r.name], zorder=3,
                   edgecolor="black", lw=0.5, label=r.name)
    if two:
        ax.scatter([demo.reward_means[0]], [demo.reward_means[1]], marker="X", s=140, color=DEMO_COLOR, zorder=4,
                   label="demonstrations (mean)")
        ax.set_xlabel(f"mean reward '{demo.reward_names[0]}'")
        ax.set_ylabel(f"mean reward '{demo.reward_names[1]}'")
    else:
        ax.axhline(demo.reward_means[0], color=DEMO_COLOR, ls="--", lw=1.4, label="demonstrations (mean)")
        ax.axhspan(demo.reward_means[0] - demo.reward_stds[0], demo.reward_means[0] + demo.reward_stds[0],
                   color="0.9", zorder=0, label="± 1 demo std")
        ax.set_xlabel("KL to the reference (nats per sequence, sampled)")
        ax.set_ylabel(f"mean reward '{demo.reward_names[0]}'")
    ax.legend(fontsize=7, loc="best")
    title = "Reward plane: sweep front, demonstrations and RCfD (paper, Figure 4)" if two else \
        "Reward against KL to the reference: sweep front, demonstrations and RCfD"
    return _finish(fig, ax, title)


CURVES = [(N.REWARD, "batch reward (first reward)"), (N.KL, "KL to reference (nats/seq)"),
          (N.MEAN_LENGTH, "completion length (tokens)"), (N.DISTINCT_2, "distinct-2 (batch)")]


def training_curves(runs, demo, colors):
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4))
    for ax, (key, label) in zip(axes.flat, CURVES):
        for r in runs:
            history = r.history()
            if history:
                ax.plot([h["step"] for h in history], [h.get(key, np.nan) for h in history], color=colors[r.name],
                        lw=1.6, marker="o", ms=2.5, label=r.name)
        if key == N.REWARD:
            ax.axhline(demo.reward_means[0], color=DEMO_COLOR, ls="--", lw=1.2, label="demonstrations")
        if key == N.MEAN_LENGTH and demo.mean_length:
            ax.axhline(demo.mean_length, color=DEMO_COLOR, ls="--", lw=1.2, label="demonstrations")
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(6, len(labels)))
    fig.suptitle("Training curves", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


SEED_PANELS = [("reward_z", (-0.25, 0.25, 1.0)), ("alignment", (0.15,)), ("distinct_2_rel", (-0.15, -0.10, 0.10)),
               ("kl_to_ref", ())]


def seed_strips(record: dict):
    """One panel per figure: every seed's value for every run (dots), their mean (bar), check lines dashed."""
    from ..plans.seeds import FIGURE_LABELS

    runs = list(record["runs"])
    fig, axes = plt.subplots(1, len(SEED_PANELS), figsize=(3.2 * len(SEED_PANELS), 3.4))
    for ax, (key, lines) in zip(axes, SEED_PANELS):
        for x, run in enumerate(runs):
            figure = record["runs"][run][key]
            values = [v for v in figure["per_seed"].values() if v == v]
            jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0.0]
            ax.scatter(x + np.asarray(jitter), values, s=18, color=BASE_COLOR if run == "base" else
                       RCFD_COLOR if run.startswith("rcfd") else "tab:blue", zorder=3)
            if values:
                ax.hlines(np.mean(values), x - 0.25, x + 0.25, color="black", lw=1.5)
        for y in lines:
            ax.axhline(y, color="0.6", ls="--", lw=0.8)
        ax.set_xticks(range(len(runs)), runs, rotation=30, fontsize=8)
        ax.set_title(FIGURE_LABELS[key], fontsize=9)
    return _finish(fig, axes, f"Per seed ({', '.join(map(str, record['seeds']))}); bar = mean")
