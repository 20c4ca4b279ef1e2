"""Fixtures of the storage-dtype and quantisation tests: placements, a batch step, and short Lightning fits."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_mm import MultimodalModule
from lightning_mm.data import SyntheticVQADataModule
from lightning_mm.placement import Placement


class LossRecorder(Callback):
    """Records the loss returned by every training step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def lora_placements(quantize: str | None = None, double_quant: bool = False, **extra) -> dict[str, Placement]:
    """LoRA r=4 on the tower and the LLM (quantised as asked), projector trained fully."""
    lora = Placement("lora", r=4, alpha=8.0, quantize=quantize, double_quant=double_quant, **extra)
    return {"vision": lora, "projector": Placement("full"), "llm": lora}


def randomize_lora_b(module: torch.nn.Module, seed: int = 1) -> None:
    """Give every ``lora_B`` non-zero values (peft starts them at zero: ``lora_A`` would get no gradient)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters()):
        if ".lora_B." in name:
            p.data = (torch.randn(p.shape, generator=gen) * 0.02).to(p.dtype)


def step(module: MultimodalModule, batch: dict, autocast: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward + token-mean loss + backward in training mode (bf16 autocast); (loss, trainable gradients)."""
    module.train()
    module.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        hidden = module(batch)  # (B, T, H)
        loss_sum, n_items = module.compute_loss(hidden, batch["labels"])
    loss = loss_sum / n_items
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.fixture(scope="session")
def fit_placed():
    """Factory: fit a fresh ``tiny`` module with ``placements`` on 16 synthetic samples (2 steps per epoch).

    Call as ``fit_placed(root, placements, precision="bf16-mixed", max_epochs=1, callbacks=(), ckpt_path=None,
    **module_kwargs)`` (``model="tiny-llava"`` for another zoo entry); returns (module, trainer, recorded losses).
    """

    def fit(root, placements, precision="bf16-mixed", max_epochs=1, callbacks=(), ckpt_path=None, **kwargs):
        L.seed_everything(0, verbose=False)
        module = MultimodalModule(warmup_ratio=0.0, placements=placements, **{"model": "tiny", **kwargs})
        recorder = LossRecorder()
        trainer = L.Trainer(
            accelerator="cpu",
            precision=precision,
            max_epochs=max_epochs,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=root,
            callbacks=[*callbacks, recorder],
        )
        data = SyntheticVQADataModule(train_samples=16, val_samples=8, batch_size=8)
        trainer.fit(module, data, ckpt_path=ckpt_path)
        return module, trainer, recorder.losses

    return fit
