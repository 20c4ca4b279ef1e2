"""PreferenceModule: DPO / IPO / SimPO on pair batches, with the reference for free under LoRA."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanMetric

from lightning_mm.data.collate import EMPTY_KEY
from lightning_mm.module import MultimodalModule
from lightning_mm.placement.lora import is_lora_parameter
from lightning_mm.preference.data import PAIRS_KEY
from lightning_mm.preference.forward import pair_hidden
from lightning_mm.preference.logprobs import answer_logprobs
from lightning_mm.preference.loss import LOSS_TYPES, PreferenceLoss, preference_loss
from lightning_mm.preference.reference import REFERENCES, adapters_disabled, frozen_copy, has_adapters

__all__ = ["PreferenceModule"]


class PreferenceModule(MultimodalModule):
    """Aligns a VLM on preference pairs (a prompt with its images, a chosen and a rejected answer).

    Everything of :class:`~lightning_mm.MultimodalModule` applies (placements, strategies, accumulation,
    checkpoints); its supervised path is not used for training. Each step runs the pairs' images through the tower once,
    scores both answers' shifted tokens on the lean path (per-sample sums, no (B, T, V) logits), the reference's too,
    and returns the pair losses summed: with ``loss_normalization: tokens`` the step's gradient is that of the mean over
    the pairs of the whole accumulation window on all ranks (the module's window count counts pairs here).

    Logged (``train/`` and ``val/``): ``loss``, ``reward_margin``, ``reward_accuracy``, ``rewards_chosen``,
    ``rewards_rejected``, ``logps_chosen``, ``logps_rejected`` (summed answer log-probabilities, pair means).

    Args:
        beta: DPO's inverse temperature (IPO's tau, SimPO's beta).
        loss_type: ``sigmoid`` (DPO), ``ipo``, or ``simpo`` (reference-free).
        reference: ``auto`` (``adapters`` under LoRA, else ``copy``), ``adapters`` (the network with its LoRA
            adapters disabled: no second copy), ``copy`` (a frozen copy of the network as built, before training:
            one more set of weights), ``none`` (SimPO only). A batch carrying ``ref_chosen_logps`` /
            ``ref_rejected_logps`` (P,) uses those instead (reference log-probabilities cached beside the data).
        simpo_gamma: SimPO's target reward margin.
        **kwargs: The arguments of :class:`~lightning_mm.MultimodalModule` (``model``, ``optimizer``, ...).
    """

    def __init__(
        self,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        reference: str = "auto",
        simpo_gamma: float = 0.5,
        **kwargs: Any,
    ) -> None:
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
        if (reference == "none") != (loss_type == "simpo") and reference != "auto":
            raise ValueError(f"reference={reference!r} does not fit loss_type={loss_type!r} (none is SimPO's only)")
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        super().__init__(**kwargs)
        self.save_hyperparameters("beta", "loss_type", "reference", "simpo_gamma")
        self.beta, self.loss_type, self.reference, self.simpo_gamma = beta, loss_type, reference, simpo_gamma
        self._reference_copy: torch.nn.Module | None = None  # set with object.__setattr__: not a submodule
        self.val_reward_accuracy = MeanMetric()
        self.val_reward_margin = MeanMetric()

    # ---------------------------------------------------------------- the reference
    def reference_kind(self) -> str:
        """The reference in use: ``adapters``, ``copy`` or ``none`` (``auto`` resolved on the built network)."""
        if self.loss_type == "simpo":
            return "none"
        if self.reference != "auto":
            return self.reference
        return "adapters" if self.network is not None and has_adapters(self.network) else "copy"

    def build_network(self):
        """The network; for ``reference: copy`` (or ``auto`` without a LoRA placement) a frozen copy is kept too,
        taken before any placement or training (it is not a submodule: no checkpoint, optimiser or sharding)."""
        network = super().build_network()
        lora = any(getattr(p, "mode", None) == "lora" for p in self.placements.values())
        if self.loss_type != "simpo" and (self.reference == "copy" or (self.reference == "auto" and not lora)):
            object.__setattr__(self, "_reference_copy", frozen_copy(network))
        return network

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.check_reference()

    def check_reference(self) -> None:
        """Under ``adapters``, refuse base weights that train: the network with its adapters off would not be the
        reference any more (e.g. a fully trained projector); ``copy`` is the reference for those placements."""
        if self.reference_kind() != "adapters":
            return
        training = [n for n, p in self.network.named_parameters() if p.requires_grad and not is_lora_parameter(n)]
        if training:
            raise ValueError(
                f"reference={self.reference!r} uses the network with its LoRA adapters off as the reference, but "
                f"{len(training)} base parameter(s) train (first: {training[0]!r}); freeze them, use LoRA on that "
                "component, or set reference: copy"
            )

    @torch.no_grad()
    def reference_logprobs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(2P,) summed answer log-probabilities under the reference, and (2P,) counts (eval mode, no grad)."""
        kind = self.reference_kind()
        if kind == "adapters":
            if not has_adapters(self.network):
                raise RuntimeError("reference=adapters needs a LoRA placement; use reference=copy")
            was = self.network.training
            self.network.eval()  # no dropout in the reference
            try:
                with adapters_disabled(self.network):
                    return self.answer_logprobs(self.network, pair_hidden(self.network, batch), batch["labels"])
            finally:
                self.network.train(was)
        ref = self._reference_copy
        if ref is None:
            raise RuntimeError(f"No reference network (reference={self.reference!r}, loss_type={self.loss_type!r})")
        if next(ref.parameters()).device != self.device:
            ref.to(self.device)
        return self.answer_logprobs(ref, pair_hidden(ref, batch), batch["labels"])

    # ---------------------------------------------------------------- the objective
    def answer_logprobs(self, network, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) summed log-probabilities of each row's answer tokens and (B,) their counts, ``lm_head`` on those rows."""
        head = network.lm_head
        return answer_logprobs(
            hidden, head.weight, labels, bias=head.bias, chunk_size=self.loss_chunk_size, softcap=network.logit_softcap
        )

    def pair_loss(self, batch: dict[str, Any]) -> PreferenceLoss:
        """Per-pair losses and rewards of a pair batch (the policy's (2P,) sums are kept for the step's logging)."""
        pairs = int(batch[PAIRS_KEY])
        logps, counts = self.answer_logprobs(self.network, pair_hidden(self.network, batch), batch["labels"])
        ref_c = ref_r = None
        if self.loss_type != "simpo":
            if batch.get("ref_chosen_logps") is not None:
                ref_c, ref_r = (torch.as_tensor(batch[k]).to(logps) for k in ("ref_chosen_logps", "ref_rejected_logps"))
            else:
                ref, _ = self.reference_logprobs(batch)  # (2P,)
                ref_c, ref_r = ref[:pairs], ref[pairs:]
        self._last_logps = logps.detach()
        return preference_loss(
            logps[:pairs],
            logps[pairs:],
            ref_c,
            ref_r,
            loss_type=self.loss_type,
            beta=self.beta,
            chosen_tokens=counts[:pairs],
            rejected_tokens=counts[pairs:],
            gamma=self.simpo_gamma,
        )

    def _log_pairs(self, stage: str, out: PreferenceLoss, pairs: int) -> None:
        logps = self._last_logps
        margin = out.chosen_rewards - out.rejected_rewards  # (P,)
        values = {
            "reward_margin": margin.mean(),
            "reward_accuracy": (margin > 0).float().mean(),
            "rewards_chosen": out.chosen_rewards.mean(),
            "rewards_rejected": out.rejected_rewards.mean(),
            "logps_chosen": logps[:pairs].mean(),
            "logps_rejected": logps[pairs:].mean(),
        }
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, batch_size=pairs, prog_bar=name == "reward_accuracy")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        pairs = int(batch.get(PAIRS_KEY) or 0)
        if pairs == 0:  # every record of the micro-batch was dropped: run the forward (collectives), zero loss
            return self(batch).sum() * 0.0
        out = self.pair_loss(batch)
        self._window_items += pairs  # the window's mean is over pairs (on_before_optimizer_step)
        loss_sum = out.losses.sum()
        self.log("train/loss", loss_sum.detach() / pairs, prog_bar=True, batch_size=pairs)
        self._log_pairs("train", out, pairs)
        return loss_sum / pairs if self.loss_normalization == "mean" else loss_sum

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        pairs = int(batch.get(PAIRS_KEY) or 0)
        if pairs == 0 or batch.get(EMPTY_KEY):
            return
        out = self.pair_loss(batch)
        margin = out.chosen_rewards - out.rejected_rewards  # (P,)
        self.val_loss.update(out.losses.mean(), weight=pairs)
        self.val_reward_accuracy.update((margin > 0).float())
        self.val_reward_margin.update(margin)
        self.log("val/loss", self.val_loss, prog_bar=True, batch_size=pairs)
        self.log("val/reward_accuracy", self.val_reward_accuracy, prog_bar=True, batch_size=pairs)
        self.log("val/reward_margin", self.val_reward_margin, batch_size=pairs)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return self.validation_step(batch, batch_idx)
