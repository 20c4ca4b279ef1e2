"""Checkpoint files are whole or absent: a process killed while writing last.ckpt leaves the previous one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_mm.checkpoint.io import AtomicCheckpointIO, use_atomic_checkpoint_io

ROOT = Path(__file__).parents[1]

# Trains the tiny model and writes last.ckpt after every step. Every file opened for writing in the checkpoint folder
# once a last.ckpt exists is cut short: the process SIGKILLs itself after 100 kB of it (as a kill -9 during the
# second checkpoint would). ``fileno`` is refused, so a copy goes through ``write`` too.
KILLED_WHILE_WRITING = r"""
import builtins, io, os, signal, sys
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning_mm import MultimodalModule
from lightning_mm.data import SyntheticVQADataModule

folder = os.path.abspath(sys.argv[1])
LIMIT = 100_000
_open = builtins.open


class KilledMidWrite:
    def __init__(self, f):
        self.f, self.written = f, 0

    def write(self, data):
        data = bytes(data)
        if self.written + len(data) > LIMIT:
            self.f.write(data[: LIMIT - self.written])
            self.f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        self.written += len(data)
        return self.f.write(data)

    def fileno(self):
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def patched_open(file, mode="r", *args, **kwargs):
    f = _open(file, mode, *args, **kwargs)
    inside = isinstance(file, (str, os.PathLike)) and os.path.dirname(os.path.abspath(file)) == folder
    if "w" in mode and inside and os.path.exists(os.path.join(folder, "last.ckpt")):
        return KilledMidWrite(f)
    return f


builtins.open = patched_open
torch.set_num_threads(1)
L.seed_everything(0, verbose=False)
trainer = L.Trainer(
    accelerator="cpu",
    max_steps=3,
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    limit_val_batches=0,
    callbacks=[ModelCheckpoint(dirpath=folder, every_n_train_steps=1, save_top_k=0, save_last=True)],
)
trainer.fit(MultimodalModule(model="tiny"), SyntheticVQADataModule(train_samples=8, val_samples=2, batch_size=2))
"""


def _other_filesystem(path: Path) -> str | None:
    """A writable folder on another filesystem than ``path`` (where a tmpfs /tmp would be), or None."""
    for candidate in ("/dev/shm", "/run/user", "/tmp"):
        if (
            os.path.isdir(candidate)
            and os.access(candidate, os.W_OK)
            and os.stat(candidate).st_dev != os.stat(path).st_dev
        ):
            return candidate
    return None


@pytest.mark.slow
def test_killed_while_writing_leaves_the_previous_last_ckpt(tmp_path):
    temp = _other_filesystem(tmp_path)
    if temp is None:
        pytest.skip("no second filesystem for the temp folder (the case where a move becomes a copy)")
    script = tmp_path / "killed_while_writing.py"
    script.write_text(KILLED_WHILE_WRITING)
    folder = tmp_path / "ckpt"
    env = {**os.environ, "TMPDIR": temp, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(folder)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    checkpoint = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)  # whole, not truncated
    assert checkpoint["global_step"] == 1  # the checkpoint before the one being written
    assert "state_dict" in checkpoint and "optimizer_states" in checkpoint


def test_atomic_io_replaces_the_file_and_leaves_nothing_else(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "run" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.arange(3)}, path)
    io.save_checkpoint({"step": 2, "w": torch.arange(4)}, path)
    assert os.listdir(path.parent) == ["last.ckpt"]
    loaded = io.load_checkpoint(path)
    assert loaded["step"] == 2 and torch.equal(loaded["w"], torch.arange(4))


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError, match="cannot serialise"):
        io.save_checkpoint({"step": 2, "bad": Unpicklable()}, path)
    assert io.load_checkpoint(path)["step"] == 1 and os.listdir(tmp_path) == ["last.ckpt"]


def test_only_the_plain_torch_io_is_replaced():
    class Custom(TorchCheckpointIO):
        pass

    class Strategy:
        checkpoint_io = TorchCheckpointIO()

    class Trainer:
        strategy = Strategy()

    trainer = Trainer()
    use_atomic_checkpoint_io(trainer)
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    trainer.strategy.checkpoint_io = custom = Custom()
    use_atomic_checkpoint_io(trainer)
    assert trainer.strategy.checkpoint_io is custom
