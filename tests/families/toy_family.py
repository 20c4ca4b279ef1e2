"""A made-up VLM family, defined outside the package: its own image layout (each image framed by two marker tokens)
and its own chat template, a timm tower and a transformers LM. Registering it is all it takes to train, predict and
chat with it."""

from __future__ import annotations

from typing import Any

from PIL import Image
from transformers import PreTrainedTokenizerBase

from lightning_mm.data import ChatFormat, ImageProcessor, PreparedImage, register_template
from lightning_mm.data.chat_template import list_templates
from lightning_mm.families import Family, ImageSetup, get_family, list_families, register_family
from lightning_mm.zoo import ModelSpec, list_models, register_model

FAMILY = "toy_framed"
TEMPLATE = "toy_chat"
MODEL = "toy-framed-vlm"
START, END = "<|im_start|>", "<|im_end|>"  # the frame: tokens the built-in synthetic tokenizer has


class FramedLayout:
    """One resized view per image, its image tokens framed: ``START <image> x N END``."""

    def __init__(self, processor: ImageProcessor, num_tokens: int, image_token_id: int, start: int, end: int) -> None:
        self.processor = processor
        self.num_tokens = num_tokens
        self.image_token_id = image_token_id
        self.start, self.end = start, end

    def prepare(self, image: Image.Image) -> PreparedImage:
        return PreparedImage(self.processor(image).unsqueeze(0), (image.height, image.width))  # (1, 3, H, W)

    def prompt_ids(self, size: tuple[int, int]) -> list[int]:
        return [self.start, *[self.image_token_id] * self.num_tokens, self.end]


class ToyFamily(Family):
    """The made-up family: the default projector, a framed layout, no transformers format."""

    name = FAMILY
    description = "test family: framed image tokens"

    def image_layout(self, spec: Any, tokenizer: PreTrainedTokenizerBase, images: ImageSetup) -> FramedLayout:
        start, end = tokenizer.convert_tokens_to_ids([START, END])
        processor = ImageProcessor(images.image_data_config, images.image_aspect)
        return FramedLayout(processor, images.view_tokens, images.image_token_id, start, end)

    def image_tokens_label(self, spec: Any, view_tokens: int) -> str:
        return f"{view_tokens}+2"


def register() -> None:
    """Register the family, its chat template and one zoo entry (once)."""
    if FAMILY not in list_families():
        register_family(ToyFamily())
    if TEMPLATE not in list_templates():
        # no role names: only the frame tokens, which the synthetic tokenizer has
        turn = (START, END)
        register_template(ChatFormat(name=TEMPLATE, roles={"system": None, "user": turn, "assistant": turn}))
    if MODEL not in list_models():
        register_model(
            ModelSpec(
                name=MODEL,
                family=FAMILY,
                description="test: a timm ViT + a 2-layer Qwen2, framed image tokens, its own chat format",
                vision_model="vit_tiny_patch16_224",
                vision_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4},
                feature_layer=-1,
                projector="linear",
                llm_config={
                    "model_type": "qwen2",
                    "hidden_size": 64,
                    "intermediate_size": 128,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 4,
                    "num_key_value_heads": 2,
                    "max_position_embeddings": 256,
                    "tie_word_embeddings": True,
                },
                tokenizer="builtin:synthetic",
                template=TEMPLATE,
            )
        )
    assert isinstance(get_family(FAMILY), ToyFamily)
