"""Regenerate the committed test assets deterministically (no network).

Writes, next to this file:

* ``llava/images/*.png``: tiny images of different sizes, aspect ratios and modes (RGB, L, RGBA).
* ``llava/llava_tiny.json`` (a list, one record per block of lines) and ``llava/llava_tiny.jsonl`` (one per line):
  LLaVA-format conversations covering image-first and image-last turns, several turns, two images, interleaved images,
  a text-only record and a system turn.
* ``tokenizer/``: a byte-level BPE tokenizer trained offline with ``tokenizers`` on the conversations, with BOS, EOS,
  a distinct pad token, the ``<image>`` token, ChatML and Llama 3 special tokens and a Jinja chat template whose
  ``{% generation %}`` blocks mark the assistant answers; saved with ``save_pretrained``.

Run: ``python tests/assets/make_assets.py``. Running it twice gives byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent
LLAVA = ROOT / "llava"

SPECIAL = [
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "<image>",
    "<|im_start|>",
    "<|im_end|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]

# Llama 3 style headers; the answer and its <|eot_id|> sit in a generation block.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] | trim }}<|eot_id|>{% endgeneration %}"
    "{% else %}{{ message['content'] | trim }}<|eot_id|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

RECORDS = [
    {
        "id": "caption-image-first",
        "image": "images/red_circle.png",
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image briefly."},
            {"from": "gpt", "value": "A red circle on a dark background."},
        ],
    },
    {
        "id": "multi-turn",
        "image": "images/blue_wide.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat color is the rectangle?"},
            {"from": "gpt", "value": "Blue."},
            {"from": "human", "value": "Is it wider than it is tall?"},
            {"from": "gpt", "value": "Yes, it is about twice as wide as it is tall."},
            {"from": "human", "value": "How many shapes are there?"},
            {"from": "gpt", "value": "There is one shape."},
        ],
    },
    {
        "id": "two-images",
        "image": ["images/red_circle.png", "images/green_tall.png"],
        "conversations": [
            {"from": "human", "value": "<image>\n<image>\nWhat differs between the two images?"},
            {"from": "gpt", "value": "The first shows a red circle, the second a tall green bar."},
        ],
    },
    {
        "id": "text-only",
        "conversations": [
            {"from": "human", "value": "What is the capital of France?"},
            {"from": "gpt", "value": "Paris."},
            {"from": "human", "value": "And of Italy?"},
            {"from": "gpt", "value": "Rome is the capital of Italy."},
        ],
    },
    {
        "id": "image-last",
        "image": "images/gray_square.png",
        "conversations": [
            {"from": "human", "value": "What shape do you see in this picture?\n<image>"},
            {"from": "gpt", "value": "A gray square."},
        ],
    },
    {
        "id": "system-turn",
        "image": "images/yellow_cross.png",
        "conversations": [
            {"from": "system", "value": "You are a careful visual assistant. Answer in one sentence."},
            {"from": "human", "value": "<image>\nWhat is drawn here?"},
            {"from": "gpt", "value": "A yellow cross on a transparent background."},
        ],
    },
    {
        "id": 42,
        "image": ["images/blue_wide.png", "images/yellow_cross.png"],
        "conversations": [
            {"from": "human", "value": "Compare <image> with <image>. Which one is wider?"},
            {"from": "gpt", "value": "The first one is wider."},
        ],
    },
    {
        "id": "text-only-short",
        "conversations": [
            {"from": "human", "value": "Say hello."},
            {"from": "gpt", "value": "Hello!"},
        ],
    },
]

EXTRA_TEXT = [
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: ASSISTANT: system user assistant",
    "The image shows a small shape. The picture has a circle, a square, a bar and a cross in red, blue, green, "
    "gray and yellow. Answer the question about the image in one short sentence.",
]


def _canvas(h: int, w: int, bg: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.asarray(bg, dtype=np.uint8), (h, w, len(bg))).copy()


def make_images(folder: Path) -> None:
    """Draw the tiny PNGs (sizes and modes differ on purpose: aspect modes and RGB conversion are exercised)."""
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:32, 0:32]
    img = _canvas(32, 32, (20, 20, 30))
    img[(y - 16) ** 2 + (x - 16) ** 2 <= 100] = (230, 30, 30)
    Image.fromarray(img, "RGB").save(folder / "red_circle.png")

    img = _canvas(24, 48, (10, 10, 10))
    img[6:18, 6:42] = (30, 60, 240)
    Image.fromarray(img, "RGB").save(folder / "blue_wide.png")

    img = _canvas(40, 20, (10, 10, 10))
    img[4:36, 7:13] = (30, 220, 40)
    Image.fromarray(img, "RGB").save(folder / "green_tall.png")

    img = np.full((28, 28), 40, dtype=np.uint8)
    img[6:22, 6:22] = 160
    Image.fromarray(img, "L").save(folder / "gray_square.png")

    img = _canvas(40, 40, (0, 0, 0, 0))
    img[16:24, 4:36] = (250, 230, 20, 255)
    img[4:36, 16:24] = (250, 230, 20, 255)
    Image.fromarray(img, "RGBA").save(folder / "yellow_cross.png")


def write_llava_files(folder: Path) -> None:
    """The same records as a JSON list (indented: each record spans several lines) and as JSON lines."""
    blocks = [json.dumps(r, indent=2) for r in RECORDS]
    (folder / "llava_tiny.json").write_text("[\n" + ",\n".join(blocks) + "\n]\n")
    (folder / "llava_tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))


def corpus() -> list[str]:
    """Training text of the tokenizer: the conversations plus the templates' markup."""
    texts = [c["value"].replace("<image>", "") for r in RECORDS for c in r["conversations"]]
    return texts + EXTRA_TEXT


def make_tokenizer(folder: Path, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on :func:`corpus` and save it with ``save_pretrained``."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(corpus(), trainer=trainer)
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", core.token_to_id("<s>"))]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return tok


def main() -> None:
    make_images(LLAVA / "images")
    write_llava_files(LLAVA)
    make_tokenizer(ROOT / "tokenizer")
    print(f"assets written under {ROOT}")


if __name__ == "__main__":
    main()
