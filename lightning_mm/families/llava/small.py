"""Modern small VLMs: a 0.5B Qwen2 LM behind a SigLIP or a DINOv2-with-registers tower.

- ``siglip-so400m-qwen2-0.5b``: the LLaVA-OneVision-0.5B pairing without its any-resolution tiling. SigLIP has no CLS
  token (timm ``num_prefix_tokens == 0``), so every one of the 27 x 27 = 729 patch tokens is kept; its MLPs use the
  tanh-approximated GELU it was trained with (timm's SigLIP entries default to the exact one).
- ``dinov2-reg-l-qwen2-0.5b``: DINOv2 ViT-L/14 with 4 register tokens at 224 px (as Prismatic VLMs use it): CLS and
  the 4 registers (5 prefix tokens) are dropped, leaving 16 x 16 = 256 patch tokens.

Both use Qwen2-0.5B-Instruct with ChatML; its tokenizer has 151646 tokens, so ``<image>`` is added at 151646 (as in
``llava-onevision-qwen2-0.5b``) inside the 151936 embedding rows.
"""

import dataclasses

from lightning_mm.zoo.llms import QWEN2_0_5B_INSTRUCT
from lightning_mm.zoo.registry import register_model
from lightning_mm.zoo.spec import ModelSpec

QWEN2_IMAGE_TOKEN_ID = 151646

SIGLIP_QWEN2_0_5B = register_model(
    ModelSpec(
        name="siglip-so400m-qwen2-0.5b",
        description="SigLIP So400m/14-384 (layer -2, all 729 patch tokens) + mlp2x_gelu + Qwen2-0.5B-Instruct",
        vision_model="vit_so400m_patch14_siglip_384.webli",
        vision_kwargs={"act_layer": "gelu_tanh"},  # SigLIP's (and transformers') tanh-approximated GELU
        feature_layer=-2,
        drop_prefix_tokens=True,
        projector="mlp2x_gelu",
        llm="Qwen/Qwen2-0.5B-Instruct",
        llm_config=QWEN2_0_5B_INSTRUCT,
        template="chatml",
        image_token="<image>",
        image_token_id=QWEN2_IMAGE_TOKEN_ID,
    )
)

DINOV2_REG_QWEN2_0_5B = register_model(
    dataclasses.replace(  # not .replace(): vision_kwargs must not inherit SigLIP's activation
        SIGLIP_QWEN2_0_5B,
        name="dinov2-reg-l-qwen2-0.5b",
        description="DINOv2-reg4 ViT-L/14 @224 (layer -2, CLS+4 registers dropped, 256 tokens) + mlp2x_gelu + Qwen2-0.5B",
        vision_model="vit_large_patch14_reg4_dinov2.lvd142m",
        vision_kwargs={"img_size": 224},
    )
)
