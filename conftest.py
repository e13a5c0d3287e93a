"""Test-session set-up shared by tests/ and the nbval run of notebooks/.

Run records, checkpoints and generated data of the whole session go to one temporary folder
(never into the repository), and the notebook kernels nbval starts inherit this environment.
"""
import os
import tempfile

_session = tempfile.mkdtemp(prefix="fgvc-tests-")
for var, sub in (("FGVC_RESULTS", "results"), ("FGVC_CHECKPOINTS", "ckpt"), ("FGVC_DATA", "data")):
    os.environ.setdefault(var, os.path.join(_session, sub))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
