"""Generation-based evaluation on 2 CPU processes: ``python eval_generate_worker.py ddp|fsdp2 OUT.json``.

The tiny model's output layer is replaced by one that always predicts ``red`` (zero weight, one-hot bias), and answers
get one new token: every generated answer is ``red``, so the metrics' true values follow from the data alone. Rank 0
writes the logged metrics to OUT.json. Lightning's launcher starts rank 1 by running this script again.
"""

from __future__ import annotations

import json
import sys

import lightning as L
import torch
from torch import nn

from lightning_mm import MultimodalModule
from lightning_mm.data import SyntheticVQADataModule
from lightning_mm.distributed import VLMModelParallelStrategy

VAL_SAMPLES = 32  # 2 ranks x 2 batches of 8: no padding by the distributed sampler


class AlwaysRed(MultimodalModule):
    """The tiny model whose every next token is ``red``."""

    def build_network(self):
        network = super().build_network()
        head = nn.Linear(network.lm_head.in_features, network.lm_head.out_features, bias=True)
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
            head.bias[self.tokenizer.convert_tokens_to_ids("red")] = 1.0
        network.llm.config.tie_word_embeddings = False
        network.llm.set_output_embeddings(head)
        return network


def data() -> SyntheticVQADataModule:
    return SyntheticVQADataModule(train_samples=16, val_samples=VAL_SAMPLES, batch_size=8)


def main(strategy: str, out: str) -> None:
    L.seed_everything(0)
    module = AlwaysRed(model="tiny", eval_generate=True, max_new_tokens=1)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=VLMModelParallelStrategy() if strategy == "fsdp2" else "ddp",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    metrics = trainer.validate(module, data(), verbose=False)[0]
    if trainer.is_global_zero:
        with open(out, "w") as f:
            json.dump(metrics, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
