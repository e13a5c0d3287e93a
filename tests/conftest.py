import pytest

@pytest.fixture(autouse=True)
def _one_thread():
    """Tests share 2 cores with each other's processes: keep torch to one thread."""
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture
def isolated_results(tmp_path, monkeypatch):
    """Run records and checkpoints of a test go to tmp_path (data stays in the session cache)."""
    monkeypatch.setenv("FGVC_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("FGVC_CHECKPOINTS", str(tmp_path / "ckpt"))
    return tmp_path
