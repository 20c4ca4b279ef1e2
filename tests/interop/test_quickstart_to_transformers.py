"""The quickstart model, trained briefly, exported in transformers' format: ``lightning-mm chat``,
``LlavaForConditionalGeneration.generate`` on ``apply_chat_template`` of standard messages, and
``pipeline("image-text-to-text")`` give the same greedy answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, LlavaForConditionalGeneration, pipeline

from lightning_mm.cli import main
from lightning_mm.data.synthetic import render_scene

QUESTION = "What color is the shape?"
NEW_TOKENS = 4


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> str:
    """A PNG of one of the task's scenes (32 px: the tiny tower's input, so no resizing on either side)."""
    img = render_scene(32, "red", "square", "top-left", np.random.default_rng(0))  # (3, 32, 32) in [0, 1]
    path = tmp_path_factory.mktemp("scene") / "red_square.png"
    Image.fromarray((img.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(path)
    return str(path)


@pytest.mark.slow
def test_chat_transformers_generate_and_pipeline_agree_on_an_exported_quickstart_model(
    quickstart_run, scene, tmp_path, capsys
):
    out = tmp_path / "hf"
    assert main(["export", str(quickstart_run["ckpt"]), str(out), "--format", "hf"]) == 0
    capsys.readouterr()
    assert (
        main(["chat", str(quickstart_run["ckpt"]), "--image", scene, QUESTION, "--max-new-tokens", str(NEW_TOKENS)])
        == 0
    )
    ours = capsys.readouterr().out.strip()
    assert ours in ("red", "green", "blue", "yellow", "magenta", "cyan")  # trained: a colour word

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    # transformers' PIL backend resizes as timm does (its default torchvision backend is a level or two off)
    processor = AutoProcessor.from_pretrained(
        out, image_processor=AutoImageProcessor.from_pretrained(out, backend="pil")
    )
    model = LlavaForConditionalGeneration.from_pretrained(out).eval()
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, images=[Image.open(scene)], return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)  # (1, T + new)
    theirs = processor.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert theirs == ours

    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    standard = [{"role": "user", "content": [{"type": "image", "image": scene}, {"type": "text", "text": QUESTION}]}]
    (result,) = pipe(text=standard, max_new_tokens=NEW_TOKENS, do_sample=False, return_full_text=False)
    assert result["generated_text"].strip() == ours
