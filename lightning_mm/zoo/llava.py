"""LLaVA-1.5 (Liu et al., "Improved Baselines with Visual Instruction Tuning"): CLIP ViT-L/14-336 + MLP + Vicuna-v1.5.

The entries reproduce the released ``llava-1.5-{7b,13b}-hf`` networks: the tower is OpenAI's CLIP ViT-L/14 at 336 px
(QuickGELU, as trained; timm's ``vit_large_patch14_clip_336`` defaults to GELU), read at the second-to-last block with
the CLS token dropped (24 x 24 = 576 tokens per image); the projector is ``mlp2x_gelu``; the LM is Vicuna-v1.5 with its
embeddings grown from 32000 to 32064 rows (``<image>`` at 32000, then padding to a multiple of 64).

Training starts from ``lmsys/vicuna-*-v1.5`` (``pretrained=True`` loads it and resizes its embeddings); the data
uses the ``plain`` template for stage 1 and ``vicuna_v1`` for stage 2 (``recipes/llava_v15``).
"""

from lightning_mm.zoo.llms import VICUNA_7B_V15, VICUNA_13B_V15
from lightning_mm.zoo.registry import register_model
from lightning_mm.zoo.spec import ModelSpec

LLAVA_VOCAB_SIZE = 32064  # 32000 + <image> (id 32000), padded to a multiple of 64
LLAVA_IMAGE_TOKEN_ID = 32000

LLAVA_15_7B = register_model(
    ModelSpec(
        name="llava-1.5-7b",
        description="LLaVA-1.5 7B: CLIP ViT-L/14-336 (layer -2, 576 patch tokens) + mlp2x_gelu + Vicuna-7B-v1.5",
        vision_model="vit_large_patch14_clip_336.openai",
        vision_kwargs={"act_layer": "quick_gelu"},
        feature_layer=-2,
        drop_prefix_tokens=True,
        projector="mlp2x_gelu",
        llm="lmsys/vicuna-7b-v1.5",
        llm_config={**VICUNA_7B_V15, "vocab_size": LLAVA_VOCAB_SIZE},
        template="vicuna_v1",
        image_token="<image>",
        image_token_id=LLAVA_IMAGE_TOKEN_ID,
    )
)

LLAVA_15_13B = register_model(
    LLAVA_15_7B.replace(
        name="llava-1.5-13b",
        description="LLaVA-1.5 13B: CLIP ViT-L/14-336 (layer -2, 576 patch tokens) + mlp2x_gelu + Vicuna-13B-v1.5",
        llm="lmsys/vicuna-13b-v1.5",
        llm_config={**VICUNA_13B_V15, "vocab_size": LLAVA_VOCAB_SIZE},
    )
)
