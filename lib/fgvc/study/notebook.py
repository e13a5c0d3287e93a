"""Helpers for the notebooks: live training curves, and executing a notebook with papermill.

    python -m fgvc.study.notebook notebooks/10_train.ipynb out.ipynb [-p '{"method": "lafe"}'] [--cwd DIR] [--normalise]

runs a notebook like papermill's command line does, with a kernel that logs no warning or
error when nothing went wrong (see :class:`QuietKernelManager`). `--normalise` (what `make
notebooks` does to the stored notebooks) then removes what changes from one execution to the
next but the outputs, with nbstripout (:data:`NBSTRIPOUT`), so that a stored notebook opened in
JupyterLab stays as committed.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import uuid
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import default

from fgvc.paths import portable

# nbstripout's options for the stored notebooks: keep the outputs and the execution counts
# (nbval takes a cell without a count for one never run); drop papermill's metadata (times,
# paths, parameters), nbclient's per-cell execution times and widget state (nbstripout's own
# defaults: metadata.widgets, cell.metadata.execution, ...).
NBSTRIPOUT = ["--keep-output", "--keep-count", "--extra-keys",
              "metadata.papermill cell.metadata.papermill"]
# The kernel `make setup` installs (ipykernel install --name python3 --display-name ...): the
# stored notebooks name it, so that JupyterLab has nothing to rewrite when it opens them.
KERNELSPEC = {"display_name": "Python 3 (fgvc-study)", "language": "python", "name": "python3"}


def plot_history(history, title: str = ""):
    """Loss and accuracy curves of a run (train and validation) as one figure."""
    import matplotlib.pyplot as plt
    import pandas as pd

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
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig = plot_history(state.history, self.title)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)


class QuietKernelManager(AsyncKernelManager):
    """The kernel manager papermill gets from :func:`execute`; differs from jupyter_client's in two ways.

    - IPC transport (Unix sockets, named uniquely per kernel in Jupyter's runtime folder)
      instead of TCP on localhost: ipykernel >= 7 warns at start-up ("Kernel is running over
      TCP without encryption") for every kernel on TCP without CurveZMQ keys. The kernel only
      ever talks to this process. (jupyter_client's own IPC name, "kernel-ipc" in the
      working directory, would be shared by kernels started in the same folder at once.)
    - No interrupt (SIGINT) before the shutdown request. jupyter_client interrupts the kernel
      first on every shutdown, in case a cell is still running. After papermill's last request
      (kernel_info, whose reply it awaits without waiting for the kernel's "idle"), the SIGINT
      can land while the kernel is still inside that request's handler, which then logs
      "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel." (about 1 run in 20). At the
      end of a notebook no cell is running, so the interrupt is not needed; a kernel that
      does not stop on the shutdown request is still sent SIGTERM, then SIGKILL.
    """

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc"

    @default("ip")
    def _ip_default(self) -> str:
        if self.transport != "ipc":
            return super()._ip_default()
        folder = jupyter_runtime_dir()
        if len(folder) > 80:  # a Unix socket's path has at most ~107 bytes
            folder = tempfile.gettempdir()
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, f"fgvc-kernel-{uuid.uuid4().hex[:12]}-ipc")

    async def _async_interrupt_kernel(self) -> None:
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()


def execute(input_path, output_path, parameters: dict | None = None, cwd=None,
            kernel_name: str = "python3", **kwargs):
    """papermill.execute_notebook with :class:`QuietKernelManager`; returns the executed notebook.
    The written copy holds no path of this machine (papermill records its input and output
    paths in the metadata): they are made portable (fgvc.paths.portable)."""
    import papermill as pm

    nb = pm.execute_notebook(str(input_path), str(output_path), parameters=parameters or {},
                             cwd=None if cwd is None else str(cwd), kernel_name=kernel_name,
                             progress_bar=False, kernel_manager_class=QuietKernelManager,
                             **kwargs)
    out = Path(output_path)
    out.write_text(portable(out.read_text()))
    return nb


def normalise(*paths, verify: bool = False) -> bool:
    """Strip `paths` (notebooks) with nbstripout's options :data:`NBSTRIPOUT`; with `verify`,
    change nothing and say whether they are already stripped. True: nothing (more) to strip."""
    import subprocess

    cmd = [sys.executable, "-m", "nbstripout", *NBSTRIPOUT, *(["--verify"] if verify else []),
           *map(str, paths)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode and not verify:
        raise RuntimeError(f"nbstripout failed: {proc.stderr or proc.stdout}")
    return proc.returncode == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fgvc.study.notebook", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("-p", "--parameters", default="{}", help="the parameters, as a JSON object")
    p.add_argument("--cwd", default=None, help="the kernel's working directory")
    p.add_argument("-k", "--kernel", default="python3")
    p.add_argument("--normalise", action="store_true",
                   help="afterwards strip the output notebook's volatile metadata (nbstripout)")
    a = p.parse_args(argv)
    # papermill's own command line logs at INFO, message only, on stderr: the same here.
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from papermill.exceptions import PapermillExecutionError

    try:
        execute(Path(a.input), Path(a.output), json.loads(a.parameters), cwd=a.cwd,
                kernel_name=a.kernel)
    except PapermillExecutionError as e:
        print(f"{e.ename}: {e.evalue}", file=sys.stderr)
        return 1
    if a.normalise:
        normalise(a.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
