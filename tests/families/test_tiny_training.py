"""tiny-gemma3 and tiny-internvl on the built-in synthetic task, as the quickstart runs ``tiny``: a few training steps,
``predict``, and ``chat`` from the checkpoint, each with its family's image framing and attention (tiny-paligemma's
synthetic runs: ``tests/distributed/test_fsdp2_attention.py``)."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from lightning_mm import MultimodalModule
from lightning_mm.chat import ChatSession, load_chat_model
from lightning_mm.data import SyntheticVQADataModule
from lightning_mm.data.scenes import render_scene

#: name -> (attention pattern, token before each image's tokens, token after them, image tokens of a scene drawn at
#: the tower's input size (training), image tokens of a 64 px scene (chat))
FAMILIES = {
    "tiny-gemma3": ("image_blocks", "<start_of_image>", "<end_of_image>", 16, 16),
    "tiny-internvl": ("causal", "<img>", "</img>", 4, 20),  # 32 px: one tile; 64 px: 2 x 2 tiles + the thumbnail
}


def _frames(ids: list[int], image_id: int) -> list[tuple[int | None, int | None, int]]:
    """(token before, token after, length) of each run of image tokens in ``ids``."""
    runs, k = [], 0
    while k < len(ids):
        if ids[k] != image_id:
            k += 1
            continue
        j = k
        while j < len(ids) and ids[j] == image_id:
            j += 1
        runs.append((ids[k - 1] if k else None, ids[j] if j < len(ids) else None, j - k))
        k = j
    return runs


@pytest.fixture(scope="module", params=list(FAMILIES))
def trained(request, tmp_path_factory) -> dict:
    name = request.param
    root = tmp_path_factory.mktemp(name)
    L.seed_everything(0, verbose=False)
    module = MultimodalModule(model=name, max_new_tokens=3)
    module.configure_model()
    before = {k: v.clone() for k, v in module.network.state_dict().items()}
    data = SyntheticVQADataModule(train_samples=4, val_samples=2, predict_samples=2, batch_size=2)
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        limit_val_batches=0,
    )
    trainer.fit(module, data)
    ckpt = root / "tiny.ckpt"
    trainer.save_checkpoint(ckpt)
    image = root / "scene.png"
    scene = render_scene(64, "red", "square", "top-left", np.random.default_rng(0))  # (3, 64, 64) in [0, 1]
    Image.fromarray((scene.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(image)
    changed = {k.split(".")[0] for k, v in module.network.state_dict().items() if not torch.equal(v, before[k])}
    return {
        "name": name,
        "module": module,
        "data": data,
        "trainer": trainer,
        "ckpt": ckpt,
        "image": image,
        "changed": changed,
        "predictions": trainer.predict(module, datamodule=data),
    }


def test_it_trains_on_the_synthetic_task_with_its_family_layout_and_attention(trained):
    name, module, data = trained["name"], trained["module"], trained["data"]
    pattern, start, end, tokens, _ = FAMILIES[name]
    assert trained["trainer"].global_step == 2 and trained["changed"] == {"vision", "projector", "llm"}
    assert module.network.attention_pattern.kind == pattern
    batch = next(iter(data.train_dataloader()))
    tok = module.tokenizer
    for row in batch["input_ids"]:
        before, after, length = _frames(row.tolist(), module.image_token_id)[0]
        assert length == tokens
        assert tok.convert_ids_to_tokens([before, after]) == [start, end]


def test_it_predicts_and_chats_from_its_checkpoint(trained):
    name = trained["name"]
    _, start, end, _, tokens = FAMILIES[name]
    rows = [row for batch in trained["predictions"] for row in batch]
    assert len(rows) == 2 and all(isinstance(r["prediction"], str) for r in rows)
    model = load_chat_model(str(trained["ckpt"]))
    assert model.network.attention_pattern.kind == FAMILIES[name][0]
    assert model.contract.tokenizer.get_vocab() == trained["module"].tokenizer.get_vocab()  # rebuilt from the spec
    session = ChatSession(model, [str(trained["image"])], max_new_tokens=3)
    ids = session.prompt_ids("What color is the shape?")[0].tolist()
    (before, after, length), *others = _frames(ids, model.contract.image_token_id)
    assert length == tokens and not others
    assert model.contract.tokenizer.convert_ids_to_tokens([before, after]) == [start, end]
    assert isinstance(session.ask("What color is the shape?"), str)
