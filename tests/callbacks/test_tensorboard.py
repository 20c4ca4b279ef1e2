"""A short run of the quickstart and LLaVA recipes writes learning rates, throughput, images and text to TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_mm.cli import main

ROOT = Path(__file__).parents[2]


def _short_run(recipe: str, tmp_path: Path, *overrides: str) -> EventAccumulator:
    config = yaml.safe_load((ROOT / "recipes" / recipe).read_text())
    for callback in config["trainer"]["callbacks"]:  # throughput windows short enough for a 6-step run
        if "window_size" in callback.get("init_args", {}):
            callback["init_args"]["window_size"] = 2
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["fit", "--config", str(path), "--trainer.accelerator=cpu", "--trainer.max_steps=6"]
    args += ["--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false", *overrides]
    assert main(args) == 0
    version = next((tmp_path / "runs").glob("*/version_0"))
    events = EventAccumulator(str(version), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    events.Reload()
    return events


def _check(events: EventAccumulator, n_samples: int) -> dict:
    tags = events.Tags()
    scalars = set(tags["scalars"])
    for component in ("vision", "projector", "llm"):  # one learning rate per parameter group, named after it
        assert f"lr-AdamW/{component}" in scalars
        assert f"lr-AdamW/{component}/no_decay" in scalars
    for rate in ("samples_per_sec", "items_per_sec", "supervised_tokens_per_sec"):
        values = [e.value for e in events.Scalars(f"train/device/{rate}")]
        assert values and all(v > 0 for v in values), rate
    for i in range(n_samples):
        assert f"val_samples/{i}/image" in tags["images"]
        assert f"val_samples/{i}/text/text_summary" in tags["tensors"]
    text = events.Tensors("val_samples/0/text/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "prompt:" in text and "generated:" in text and "reference:" in text
    return {"scalars": scalars, "text": text}


def test_quickstart_run_logs_lr_throughput_and_held_out_samples(tmp_path):
    events = _short_run(
        "quickstart.yaml",
        tmp_path,
        "--trainer.val_check_interval=3",
        "--data.init_args.train_samples=48",
        "--data.init_args.val_samples=8",
        "--data.init_args.batch_size=8",
        "--model.init_args.eval_generate=true",
    )
    seen = _check(events, n_samples=4)
    assert "val/gen/exact_match" in seen["scalars"]
    assert "What" in seen["text"] or "Which" in seen["text"] or "Where" in seen["text"] or "In" in seen["text"]
    # the images are the held-out scenes: not blank
    image = events.Images("val_samples/0/image")[-1]
    assert (image.width, image.height) == (32, 32)


@pytest.mark.slow
def test_llava_recipe_run_logs_lr_throughput_and_held_out_samples(tmp_path):
    events = _short_run("llava_tiny.yaml", tmp_path, "--trainer.max_epochs=6", "--data.init_args.batch_size=2")
    seen = _check(events, n_samples=2)
    assert "val/gen/anls" in seen["scalars"]
