"""Cost of generation-based evaluation: a validation pass with ``eval_generate`` against the teacher-forced one.

Usage:
    python benchmarks/eval_generate.py              # quickstart's held-out set (600 samples, batch 32)
    python benchmarks/eval_generate.py --tiny       # CI smoke: a few samples

The tiny model is trained briefly on the quickstart task (long enough that its answers end at the end-of-turn token,
as a trained model's do), then the same held-out samples are validated alternately without and with
``eval_generate`` in the same process, several times; the median times give the ratio. The quickstart validates 5
times (every 500 of its 2000 steps and once at the end), so 5 x the extra time is what
``--model.init_args.eval_generate true`` adds to it.
"""

from __future__ import annotations

import statistics
import time

import lightning as L
import torch
from _harness import benchmark_parser, write_json
from lightning.pytorch.callbacks import Callback

from lightning_mm import MultimodalModule
from lightning_mm.data import SyntheticVQADataModule


class _AnswerLengths(Callback):
    def __init__(self) -> None:
        self.lengths: list[int] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if "generated" in outputs:
            self.lengths += [len(g) for g in outputs["generated"]["generated_ids"]]


def main() -> None:
    parser = benchmark_parser(__doc__, compute=False)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    steps, val_samples, repeats = (4, 32, 1) if args.tiny else (60, 600, args.repeats)
    L.seed_everything(0)
    module = MultimodalModule(model="tiny", optimizer=lambda p: torch.optim.AdamW(p, lr=2e-3, weight_decay=0.0))
    dm = SyntheticVQADataModule(
        train_samples=32 * steps, val_samples=val_samples, batch_size=32, train_questions_per_image=3
    )
    quiet = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    L.Trainer(max_epochs=1, enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0, **quiet).fit(
        module, dm
    )
    times: dict[bool, list[float]] = {False: [], True: []}
    lengths = _AnswerLengths()
    metrics = {}
    for _ in range(repeats):
        for generate in (False, True):
            module.eval_generate = generate
            trainer = L.Trainer(callbacks=[lengths], **quiet)
            start = time.perf_counter()
            metrics = trainer.validate(module, dm, verbose=False)[0]
            times[generate].append(time.perf_counter() - start)
    tf, gen = statistics.median(times[False]), statistics.median(times[True])
    result = {
        "val_samples": val_samples,
        "teacher_forced_s": round(tf, 3),
        "eval_generate_s": round(gen, 3),
        "ratio": round(gen / tf, 3),
        "quickstart_extra_s": round(5 * (gen - tf), 1),
        "mean_generated_tokens": round(sum(lengths.lengths) / max(len(lengths.lengths), 1), 2),
        "answer_accuracy": metrics.get("val/answer_accuracy"),
        "gen_exact_match": metrics.get("val/gen/exact_match"),
    }
    print(
        f"validation of {val_samples} samples, median of {repeats}: teacher-forced {tf:.2f} s, with eval_generate {gen:.2f} s"
    )
    print(f"time ratio eval_generate/teacher-forced: {gen / tf:.3f}")
    print(f"generated tokens per answer (end-of-turn excluded): {result['mean_generated_tokens']}")
    print(f"quickstart with eval_generate (5 validations): about {result['quickstart_extra_s']} s more")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
