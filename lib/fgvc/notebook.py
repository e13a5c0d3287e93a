"""Small helpers for the notebooks: live training curves."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def plot_history(history: list[dict] | pd.DataFrame, title: str = ""):
    """Loss and accuracy curves of a run (train and validation) as one figure."""
    df = pd.DataFrame(history)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    if len(df):
        ax1.plot(df["epoch"], df["train_loss"], "o-", label="train loss")
        ax1.plot(df["epoch"], df["val_loss"], "o-", label="val CE")
        ax2.plot(df["epoch"], df["train_top1"], "o-", label="train top-1")
        ax2.plot(df["epoch"], df["val_top1"], "o-", label="val top-1")
    ax1.set_xlabel("epoch"), ax2.set_xlabel("epoch"), ax2.set_ylabel("%")
    ax1.legend(), ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


class LiveCurves:
    """Redraws the curves in place after every epoch (in JupyterLab; papermill keeps the last)."""

    def __init__(self, title: str = ""):
        self.title, self.handle = title, None

    def update(self, state) -> None:
        from IPython.display import display

        fig = plot_history(state.history, self.title)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)
