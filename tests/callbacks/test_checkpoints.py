"""Round trips: full checkpoint reload, adapter-only reload onto a fresh base, resume equal to an uninterrupted run."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import AdapterOnlyCheckpoint, FullComponent, LoRAComponent
from lightning_mm.checkpoint.format import CHECKPOINT_KEY
from lightning_mm.cli import main
from lightning_mm.interop.parts import load_exported


def placement_callbacks() -> list:
    return [
        LoRAComponent("vision", r=4, alpha=8.0),
        FullComponent("projector", lr=2e-3),
        LoRAComponent("llm", r=4, alpha=8.0),
    ]


class StopAfterEpochs(Callback):
    """Ends the run after ``epochs`` epochs, as if it were killed there."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def trained(module: MultimodalModule) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def uninterrupted(fit_tiny, tmp_path_factory):
    """2 epochs x 2 steps in one go; its final full checkpoint."""
    root = tmp_path_factory.mktemp("uninterrupted")
    module, trainer, losses = fit_tiny(root, placement_callbacks(), max_epochs=2)
    path = root / "final.ckpt"
    trainer.save_checkpoint(path)
    return module, losses, path


@pytest.fixture(scope="module")
def interrupted(fit_tiny, tmp_path_factory):
    """``interrupted(kind)``: the same run stopped after epoch 1, with a ``full`` or ``adapter_only`` checkpoint.

    Returns (module, losses, checkpoint path); each kind runs once per module.
    """
    runs = {}

    def run(kind: str):
        if kind not in runs:
            root = tmp_path_factory.mktemp(f"interrupted-{kind}")
            extra = [AdapterOnlyCheckpoint()] if kind == "adapter_only" else []
            module, trainer, losses = fit_tiny(
                root, placement_callbacks(), max_epochs=2, extra_callbacks=[StopAfterEpochs(1), *extra]
            )
            trainer.save_checkpoint(root / "epoch1.ckpt")
            runs[kind] = (module, losses, root / "epoch1.ckpt")
        return runs[kind]

    return run


def test_full_checkpoint_reloads_adapters_and_weights(uninterrupted, vqa_batch):
    module, _, path = uninterrupted
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert set(checkpoint["hyper_parameters"]["placements"]) == {"vision", "projector", "llm"}
    assert checkpoint[CHECKPOINT_KEY]["adapter_only"] is False
    loaded = MultimodalModule.load_from_checkpoint(path)
    assert {c: p.to_dict() for c, p in loaded.placements.items()} == {
        c: p.to_dict() for c, p in module.placements.items()
    }
    ours, theirs = module.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys() and any(".lora_B." in k for k in ours)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    flags = {n: p.requires_grad for n, p in loaded.named_parameters()}
    assert flags == {n: p.requires_grad for n, p in module.named_parameters()}
    module.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(vqa_batch), module(vqa_batch), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["full", "adapter_only"])
def test_resume_continues_with_the_losses_of_the_uninterrupted_run(
    kind, uninterrupted, interrupted, fit_tiny, tmp_path
):
    full_module, full_losses, _ = uninterrupted
    _, first_losses, path = interrupted(kind)
    assert len(full_losses) == 4 and first_losses == pytest.approx(full_losses[:2], rel=1e-6)
    resumed, trainer, rest = fit_tiny(tmp_path, placement_callbacks(), max_epochs=2, ckpt_path=str(path))
    assert trainer.global_step == 4
    assert rest == pytest.approx(full_losses[2:], rel=1e-5), kind
    theirs = trained(resumed)
    for name, value in trained(full_module).items():
        torch.testing.assert_close(theirs[name], value, rtol=1e-5, atol=1e-6)


def test_adapter_only_checkpoint_holds_the_trained_weights_only(interrupted):
    module, _, path = interrupted("adapter_only")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint[CHECKPOINT_KEY]["adapter_only"] is True
    weights = set(checkpoint["state_dict"])
    params = dict(module.named_parameters(remove_duplicate=False))
    assert weights & set(params) == {n for n, p in params.items() if p.requires_grad}
    assert not any("base_layer" in k for k in weights)
    assert weights - set(params) <= {n for n, _ in module.named_buffers()}
    assert checkpoint["optimizer_states"]  # resumable


def test_adapter_only_checkpoint_reloads_onto_a_fresh_base(interrupted, vqa_batch, recwarn):
    module, _, path = interrupted("adapter_only")
    L.seed_everything(0, verbose=False)  # the base is a random init: rebuilt under the run's seed
    loaded = MultimodalModule.load_from_checkpoint(path)
    assert not [w for w in recwarn if "differs" in str(w.message)]
    ours, theirs = module.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    module.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(vqa_batch), module(vqa_batch), rtol=0, atol=0)

    L.seed_everything(1, verbose=False)
    with pytest.warns(UserWarning, match="frozen base of the vision, llm differs"):  # the projector trains in full
        MultimodalModule.load_from_checkpoint(path)


def test_adapter_only_checkpoint_exports_only_onto_its_base(interrupted, vqa_batch, tmp_path, capsys):
    module, _, path = interrupted("adapter_only")
    assert main(["export", str(path), str(tmp_path / "other"), "--seed", "3"]) == 2
    assert "give the training run's seed" in capsys.readouterr().err
    assert main(["export", str(path), str(tmp_path / "ok"), "--seed", "0"]) == 0
    merged = load_exported(tmp_path / "ok")
    module.eval()
    with torch.no_grad():
        got = merged(vqa_batch["input_ids"], vqa_batch["attention_mask"], vqa_batch["pixel_values"])
        torch.testing.assert_close(got, module(vqa_batch), rtol=0, atol=1e-5)
