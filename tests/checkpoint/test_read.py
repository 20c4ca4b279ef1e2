"""Every checkpoint the project reads is loaded weights-only: a malicious pickle, local or served over HTTP, never runs."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_mm import MultimodalModule
from lightning_mm.checkpoint.file import CheckpointFileError
from lightning_mm.checkpoint.io import AtomicCheckpointIO
from lightning_mm.checkpoint.read import UnsafeCheckpointError, read_checkpoint
from lightning_mm.cli import main
from lightning_mm.data import SyntheticVQADataModule

CLI = ["--model", "MultimodalModule", "--data", "SyntheticVQADataModule", "--data.train_samples", "8"]
CLI += ["--data.val_samples", "4", "--data.predict_samples", "4", "--data.batch_size", "4", "--trainer.max_steps", "1"]
CLI += ["--trainer.logger", "false", "--trainer.enable_checkpointing", "false"]
CLI += ["--trainer.enable_progress_bar", "false"]


class _Payload:
    """Unpickled without restriction, this writes the marker file: the code a hostile checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A malicious checkpoint (a Lightning checkpoint with a pickled payload), as a local file and as a URL."""
    root = tmp_path_factory.mktemp("served")
    marker = root / "marker"
    checkpoint = {"epoch": 0, "global_step": 0, "state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {}}
    checkpoint["hyper_parameters"]["note"] = _Payload(marker)
    torch.save(checkpoint, root / "evil.ckpt")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"file": str(root / "evil.ckpt"), "url": f"http://127.0.0.1:{server.server_port}/evil.ckpt", "marker": marker}
    server.shutdown()
    thread.join()


def _one_paragraph(text: str, name: str) -> None:
    lines = [line for line in text.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in text, text
    assert f"Checkpoint {name} was refused: it holds a Python object (exec)" in lines[0]


@pytest.mark.parametrize("where", ["file", "url"])
def test_a_malicious_checkpoint_never_runs_from_any_entry_point(served, where, capsys, tmp_path, monkeypatch):
    """Before: a URL was unpickled with ``weights_only=False`` (Lightning's default for remote files): the payload ran;
    a local file was refused by torch's default only, with a raw UnpicklingError traceback."""
    monkeypatch.chdir(tmp_path)
    name, marker = served[where], served["marker"]
    for command in ("fit", "validate", "predict"):
        assert main([command, *CLI, "--ckpt_path", name]) == 2, command
        _one_paragraph(capsys.readouterr().err, name)
    for command in (["export", name, str(tmp_path / "out")], ["chat", name, "hello"]):
        assert main(command) == 2, command
        _one_paragraph(capsys.readouterr().err, name)
    assert not (tmp_path / "out").exists()
    with pytest.raises(UnsafeCheckpointError, match=f"Checkpoint {name} was refused") as info:
        MultimodalModule.load_from_checkpoint(name)
    assert "\n" not in str(info.value)
    module = MultimodalModule(model="tiny")
    data = SyntheticVQADataModule(train_samples=8, batch_size=4)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, barebones=True)
    with pytest.raises(UnsafeCheckpointError, match="was refused"):  # a run resumed from Python, Lightning's IO
        trainer.fit(module, datamodule=data, ckpt_path=name)
    assert not marker.exists()


def test_loading_with_weights_only_false_is_refused(served, tmp_path):
    with pytest.raises(UnsafeCheckpointError, match="weights_only.*=False is not supported"):
        MultimodalModule.load_from_checkpoint(served["file"], weights_only=False)
    with pytest.raises(UnsafeCheckpointError, match="weights_only=False is not supported"):
        AtomicCheckpointIO().load_checkpoint(served["file"], weights_only=False)
    assert not served["marker"].exists()


def test_a_whole_checkpoint_reads_from_a_url_and_a_corrupt_or_missing_one_is_named(served, tmp_path):
    root = Path(served["file"]).parent
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "epoch": 2}, root / "good.ckpt")
    base = served["url"].rsplit("/", 1)[0]
    assert read_checkpoint(f"{base}/good.ckpt")["state_dict"]["w"].tolist() == [0.0, 1.0, 2.0]
    (root / "corrupt.ckpt").write_bytes((root / "good.ckpt").read_bytes()[:200])
    with pytest.raises(CheckpointFileError, match=f"Checkpoint {base}/corrupt.ckpt is truncated"):
        read_checkpoint(f"{base}/corrupt.ckpt")
    with pytest.raises(CheckpointFileError, match=f"Checkpoint {base}/absent.ckpt could not be downloaded: HTTP"):
        read_checkpoint(f"{base}/absent.ckpt")
