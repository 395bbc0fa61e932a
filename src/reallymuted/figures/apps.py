"""The ten apps side by side: what each source of evidence shows while muted."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reallymuted.figures import PALETTE, save, source_footer


def plot_headline(table: pd.DataFrame, outputs: list[str | Path]) -> None:
    """One row per app: the measured model's muted mic reads and traffic, and its data leak.

    Only ``testbed-profile`` rows are drawn; each row's label says it is a model, unmeasured
    apps are marked as such, and so are the read shares of profiles that cannot model their
    app's finding (M2, buffer flags only: a Chromium page reads every sample). The footer's
    sources are those of the rows drawn, and it says what became of the other sources.
    """
    apps = list(dict.fromkeys(table.app))
    names = table.drop_duplicates("app").set_index("app").app_name
    measured = table[(table.status == "measured") & (table.source == "testbed-profile")]
    measured = measured.drop_duplicates("app").set_index("app")
    y = np.arange(len(apps))
    fig, (reads, packets, leak) = plt.subplots(
        1,
        3,
        figsize=(12, 0.5 * len(apps) + 1.8),
        sharey=True,
        gridspec_kw={"width_ratios": [1.2, 1, 0.6]},
    )
    labels = []
    for app in apps:
        model = measured.measured_as.get(app, "")
        model = model.split(" ")[1] if model.startswith("model ") else "no profile / not run"
        labels.append(f"{names[app]}\n(model: {model})")
    height = 0.38
    modelled = [str(measured.reads_modelled.get(a, "yes")) == "yes" for a in apps]

    def share(column: str) -> list[float]:  # no bar where the profile cannot model the reads
        pairs = zip(apps, modelled, strict=True)
        return [measured[column].get(a, np.nan) if m else np.nan for a, m in pairs]

    os_share, app_share = share("muted_read_share_os"), share("muted_read_share_app")
    reads.barh(y - height / 2, os_share, height, color=PALETTE[0], label="OS witness")
    reads.barh(y + height / 2, app_share, height, color=PALETTE[1], label="app witness")
    reads.set_xlim(0, 1.05)
    reads.set_xlabel("share of real time the mic was read while muted")
    reads.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    reads.set_yticks(y, labels, fontsize=8)
    reads.invert_yaxis()

    rates = [measured.muted_packets_per_s.get(a, np.nan) for a in apps]
    packets.barh(y, rates, 0.6, color=PALETTE[2])
    packets.set_xlabel("packets/s sent while muted")

    leak.set_xlim(0, 1)
    leak.set_xticks([])
    leak.set_title("audio-derived data leaving\nwhile muted", fontsize=9)
    for yi, app in zip(y, apps, strict=True):
        if app in measured.index:
            verdict = measured.audio_derived_data_leaving[app]
            colour = PALETTE[3] if verdict == "yes" else "0.35"
            leak.text(0.05, yi, verdict, va="center", color=colour, fontweight="bold")
        else:
            status = table[table.app == app].status.iloc[0]
            leak.text(0.05, yi, status.split(":")[0], va="center", color="0.5", fontsize=8)
    for ax in (reads, packets):
        for yi, app in zip(y, apps, strict=True):
            if app not in measured.index:
                _mark(ax, yi, "not measured")
    for yi, app, is_modelled in zip(y, apps, modelled, strict=True):
        if app in measured.index and not is_modelled:
            why = str(measured.reads_modelled[app]).removeprefix("no: ")
            _mark(reads, yi, f"behaviour not modelled\n({why})")
    fig.suptitle(
        "The ten apps, as modelled by their testbed profiles (models of each app's published "
        "mute behaviour, not the apps)",
        x=0.01,
        ha="left",
        fontsize=10,
    )
    source_footer(fig, measured.source, _others(table))
    fig.tight_layout()
    save(fig, outputs)


def _mark(ax: plt.Axes, y: float, text: str) -> None:
    """Grey text where a bar would be: the value is not a measurement of the app."""
    ax.text(0.02, y, text, va="center", fontsize=7, color="0.5", transform=ax.get_yaxis_transform())


def _others(table: pd.DataFrame) -> str:
    """What the footer says beside the drawn rows' sources: models, not the apps, and what
    became of every other source of the table (not run, or measured but not drawn)."""
    said = ["models of each app's published behaviour, not the apps"]
    others = table[table.source != "testbed-profile"]
    for status, rows in others.groupby(others.status == "measured", sort=False):
        names = ", ".join(sorted(set(rows.source)))
        said.append(f"{names}: {'measured, not drawn' if status else 'not run'}")
    return "; ".join(said) + " (results/tables/apps_headline.csv)"
