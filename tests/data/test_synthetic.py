import numpy as np
import torch
from transformers import AutoTokenizer

from lightning_mm.data import SyntheticVQADataModule, build_synthetic_tokenizer
from lightning_mm.data.synthetic import COLORS, render_scene


def _bound_dm(module, **kw):
    dm = SyntheticVQADataModule(**{"train_samples": 16, "val_samples": 16, "batch_size": 8, **kw})
    return dm.bind(module.data_contract)


def test_deterministic_by_seed_and_seeds_differ(tiny_module):
    a = _bound_dm(tiny_module)._dataset(8, seed=3)
    b = _bound_dm(tiny_module)._dataset(8, seed=3)
    c = _bound_dm(tiny_module)._dataset(8, seed=4)
    for i in range(8):
        assert torch.equal(a[i]["pixel_values"], b[i]["pixel_values"]) and a[i]["answer"] == b[i]["answer"]
    assert any(not torch.equal(a[i]["pixel_values"], c[i]["pixel_values"]) for i in range(8))


def test_only_the_answer_and_its_end_of_turn_are_supervised(tiny_module):
    tok = tiny_module.tokenizer
    ds = _bound_dm(tiny_module)._dataset(12, seed=0)
    for i in range(12):
        s = ds[i]
        sup = s["labels"][s["labels"] != -100].tolist()
        assert tok.convert_ids_to_tokens(sup) == [s["answer"], "<|im_end|>"]
        assert int((s["input_ids"] == tiny_module.image_token_id).sum()) == tiny_module.num_image_tokens
        kept = s["labels"] != -100
        assert torch.equal(s["labels"][kept], s["input_ids"][kept])


def test_blind_images_are_blank(tiny_module):
    ds = _bound_dm(tiny_module, blind_images=True)._dataset(4, seed=0)
    imgs = torch.stack([ds[i]["pixel_values"] for i in range(4)])  # (4, ..., C, H, W)
    # one blank image: every channel constant (its normalised value differs per channel), the same in every sample
    assert imgs.flatten(-2).std(dim=-1).max() == 0
    assert torch.equal(imgs, imgs[:1].expand_as(imgs))


def test_render_scene_draws_the_colour_in_the_quadrant():
    img = render_scene(32, "red", "square", "bottom-right", np.random.default_rng(0))
    red = np.isclose(img[1], COLORS["red"][1] * img[0] / COLORS["red"][0], atol=1e-3) & (img[0] > 0.5)
    ys, xs = np.nonzero(red)
    assert len(ys) > 20 and ys.min() >= 14 and xs.min() >= 14


def test_tokenizer_round_trips_with_chat_template(tmp_path):
    tok = build_synthetic_tokenizer()
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.pad_token_id != again.eos_token_id
    msgs = [{"role": "user", "content": "<image>\nWhat color is the shape?"}, {"role": "assistant", "content": "red"}]
    out = again.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    sup = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert again.convert_ids_to_tokens(sup) == ["red", "<|im_end|>"]


def test_predict_loader_is_left_padded_prompts(tiny_module):
    dm = _bound_dm(tiny_module, predict_samples=4)
    batch = next(iter(dm.predict_dataloader()))
    assert "labels" in batch and (batch["labels"] == -100).all()  # prompts only: nothing supervised
    tok = tiny_module.tokenizer
    last = batch["input_ids"][:, -1].tolist()
    assert tok.convert_ids_to_tokens([last[0]]) != ["<pad>"]  # left padding: prompts end at the right edge


def test_multi_question_samples_supervise_each_answer_in_order(tiny_module):
    tok = tiny_module.tokenizer
    ds = _bound_dm(tiny_module)._dataset(6, seed=0, questions_per_image=3)
    for i in range(6):
        s = ds[i]
        sup = tok.convert_ids_to_tokens(s["labels"][s["labels"] != -100].tolist())
        answers = s["answer"].split()
        assert len(answers) == 3
        assert sup == [t for a in answers for t in (a, "<|im_end|>")]
        assert int((s["input_ids"] == tiny_module.image_token_id).sum()) == tiny_module.num_image_tokens
