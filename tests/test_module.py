"""MultimodalModule: placement application order, the placement table, checkpoint hooks, activation checkpointing."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import SingleDeviceStrategy
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_mm import MultimodalModule
from lightning_mm.callbacks import FreezeComponent, FullComponent, LoRAComponent, Placement
from lightning_mm.checkpoint.format import CHECKPOINT_KEY
from lightning_mm.data import SyntheticVQADataModule, VLMCollator


class RecordingStrategy(SingleDeviceStrategy):
    """Records what trains when the strategy sets the model up (where a sharding strategy would wrap it)."""

    def setup(self, trainer: L.Trainer) -> None:
        module = self.lightning_module
        self.lora_at_setup = sorted(n for n, _ in module.named_parameters() if ".lora_" in n)
        self.trainable_at_setup = {n for n, p in module.named_parameters() if p.requires_grad}
        super().setup(trainer)


def _batch(module: MultimodalModule, n: int = 4) -> dict:
    dm = SyntheticVQADataModule(train_samples=n, val_samples=n, batch_size=n)
    dm.bind(module.data_contract)
    return next(iter(dm.train_dataloader()))


def _fit_one_step(module: MultimodalModule, callbacks: list, tmp_path, logger=False) -> RecordingStrategy:
    strategy = RecordingStrategy(device=torch.device("cpu"))
    trainer = L.Trainer(
        strategy=strategy,
        max_steps=1,
        limit_val_batches=0,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )
    trainer.fit(module, SyntheticVQADataModule(train_samples=4, val_samples=4, batch_size=4))
    return strategy


@pytest.mark.parametrize("prebuilt", [False, True], ids=["built-in-configure_model", "built-before-fit"])
def test_placements_are_applied_before_the_strategy_sets_up_and_logged(prebuilt, tmp_path):
    module = MultimodalModule(model="tiny")
    if prebuilt:
        module.configure_model()  # the callbacks then apply their placement in setup, at once
    logger = TensorBoardLogger(tmp_path, name="tb")
    callbacks = [FreezeComponent("vision"), FullComponent("projector"), LoRAComponent("llm", r=2)]
    strategy = _fit_one_step(module, callbacks, tmp_path, logger=logger)
    assert len(strategy.lora_at_setup) == 2 * 14  # A and B of every attention / MLP projection of the 2 layers
    assert all(n.startswith("network.llm.") for n in strategy.lora_at_setup)
    assert {n.split(".")[1] for n in strategy.trainable_at_setup} == {"projector", "llm"}

    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0}).Reload()
    text = events.Tensors("placement/text_summary")[0].tensor_proto.string_val[0].decode()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) == {"component", "vision", "projector", "llm", "all"}
    assert "| frozen | 0 |" in rows["vision"] and "lora r=2" in rows["llm"]
    projector_params = sum(p.numel() for p in module.network.projector.parameters())
    assert f"| full | {projector_params:,} | {projector_params:,} |" in rows["projector"]


def test_configure_model_is_idempotent_with_placements():
    module = MultimodalModule(model="tiny")
    module.set_placement("vision", Placement("lora", r=2))
    module.configure_model()
    network, names = module.network, [n for n, _ in module.named_parameters()]
    module.configure_model()
    module.apply_placements()
    assert module.network is network and [n for n, _ in module.named_parameters()] == names


def test_without_placements_everything_that_runs_trains():
    module = MultimodalModule(model="tiny")
    module.configure_model()
    unused = {f"network.vision.{n}" for n in module.network.vision.unused_parameter_names()}
    assert unused
    assert {n for n, p in module.named_parameters() if not p.requires_grad} == unused
    assert [r["mode"] for r in module.placement_table()] == ["full", "full", "full"]


def test_unknown_component_is_refused():
    with pytest.raises(ValueError, match="Unknown component"):
        MultimodalModule(model="tiny").set_placement("audio", Placement("full"))


def _checkpoint(module: MultimodalModule) -> dict:
    """What Lightning's ``save_checkpoint`` writes for the module: state dict, hyperparameters, the module's own."""
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    module.on_save_checkpoint(checkpoint)
    return checkpoint


def test_checkpoint_placement_is_taken_when_none_is_declared_and_conflicts_raise():
    torch.manual_seed(0)
    source = MultimodalModule(model="tiny")
    source.set_placement("llm", Placement("lora", r=2, alpha=4.0))
    source.set_placement("vision", Placement("frozen"))
    source.configure_model()
    checkpoint = _checkpoint(source)
    assert checkpoint["hyper_parameters"]["placements"]["llm"]["r"] == 2  # what trains: a hyperparameter

    fresh = MultimodalModule(model="tiny")
    fresh.configure_model()  # Lightning's load_from_checkpoint builds before on_load_checkpoint
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])  # strict: the adapters exist before the weights load
    assert fresh.placements == source.placements
    assert not any(p.requires_grad for p in fresh.network.vision.parameters())

    other = MultimodalModule(model="tiny")
    other.set_placement("llm", Placement("lora", r=4))
    other.configure_model()
    with pytest.raises(ValueError, match="trained the llm as 'lora r=2 a=4'"):
        other.on_load_checkpoint(checkpoint)


def test_placements_are_hyperparameters_and_rebuild_the_adapters(tmp_path):
    torch.manual_seed(0)
    source = MultimodalModule(model="tiny", placements={"llm": {"mode": "lora", "r": 2, "alpha": 4.0}})
    source.set_placement("vision", Placement("frozen"))
    assert source.hparams.placements == {c: p.to_dict() for c, p in source.placements.items()}
    source.configure_model()
    assert any(".lora_A." in n for n, _ in source.named_parameters())
    torch.save(_checkpoint(source), tmp_path / "m.ckpt")
    loaded = MultimodalModule.load_from_checkpoint(tmp_path / "m.ckpt")
    assert loaded.placements == source.placements
    assert loaded.state_dict().keys() == source.state_dict().keys()


def test_a_checkpoint_of_the_earlier_format_still_loads(tmp_path):
    """Placements under the checkpoint key only (no ``placements`` hyperparameter), as earlier versions wrote them."""
    torch.manual_seed(0)
    source = MultimodalModule(model="tiny")
    source.set_placement("llm", Placement("lora", r=2, alpha=4.0))
    source.configure_model()
    hparams = {k: v for k, v in source.hparams.items() if k != "placements"}
    placements = {c: p.to_dict() for c, p in source.placements.items()}
    old = {
        "state_dict": source.state_dict(),
        "hyper_parameters": hparams,
        CHECKPOINT_KEY: {"placements": placements, "adapter_only": False},
        "pytorch-lightning_version": L.__version__,
    }
    torch.save(old, tmp_path / "old.ckpt")
    loaded = MultimodalModule.load_from_checkpoint(tmp_path / "old.ckpt")
    assert loaded.placements == source.placements
    for name, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_activation_checkpointing_changes_no_number():
    grads, outputs = [], []
    for ac in (False, True):
        torch.manual_seed(0)
        module = MultimodalModule(model="tiny", activation_checkpointing=ac)
        module.set_placement("vision", Placement("lora", r=2))
        module.configure_model()
        with torch.no_grad():
            for name, p in module.named_parameters():
                if ".lora_B." in name:
                    p.fill_(0.01)  # non-zero, so lora_A gets a gradient too
        module.train()
        batch = _batch(module)
        loss_sum, n_items = module.compute_loss(module(batch), batch["labels"])
        (loss_sum / n_items).backward()
        outputs.append(loss_sum.detach())
        grads.append({n: p.grad for n, p in module.named_parameters() if p.requires_grad})
    torch.testing.assert_close(outputs[1], outputs[0])
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7)


def test_a_batch_of_dropped_records_trains_nothing_and_scores_nothing(tiny_module):
    collate = VLMCollator(tiny_module.tokenizer.pad_token_id, "right")
    empty = collate([{"id": "a", "skipped": ["image_missing"]}])
    loss_sum, n_items = tiny_module.compute_loss(tiny_module(empty), empty["labels"])
    assert float(loss_sum.detach()) == 0 and int(n_items) == 0  # no target: the step adds nothing
    tiny_module.validation_step(empty, 0)
    assert int(tiny_module.val_answer_accuracy.weight) == 0  # not a wrong answer either
    prompt = VLMCollator(tiny_module.tokenizer.pad_token_id, "left")([{"id": "a", "skipped": ["prompt_too_long"]}])
    assert tiny_module.predict_step(prompt, 0) == []
