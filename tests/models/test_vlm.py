from pathlib import Path

import pytest
import torch

from lightning_mm.data import ImageProcessor, SyntheticVQADataModule
from lightning_mm.loss import shifted_cross_entropy
from lightning_mm.placement import Placement


def test_forward_returns_hidden_states_and_loss_matches_full_logits(tiny_module, tiny_batch):
    net = tiny_module.network
    hidden = tiny_module(tiny_batch)
    B, T = tiny_batch["input_ids"].shape
    assert hidden.shape == (B, T, net.llm.config.hidden_size)
    loss_sum, n = tiny_module.compute_loss(hidden, tiny_batch["labels"])
    ref = shifted_cross_entropy(net.lm_head(hidden), tiny_batch["labels"])
    torch.testing.assert_close(loss_sum / n, ref, rtol=1e-5, atol=1e-6)


def test_image_features_reach_the_llm(tiny_module, tiny_batch):
    """Changing the pixels changes the hidden states at and after the image positions, not before."""
    net = tiny_module.network
    h1 = tiny_module(tiny_batch)
    other = dict(tiny_batch, pixel_values=torch.randn_like(tiny_batch["pixel_values"]))
    h2 = tiny_module(other)
    img_pos = (tiny_batch["input_ids"][0] == net.image_token_id).nonzero()
    first = int(img_pos[0])
    assert torch.allclose(h1[0, :first], h2[0, :first], atol=1e-6)
    assert not torch.allclose(h1[0, first:], h2[0, first:])


def test_tower_runs_under_no_grad_only_when_frozen(tiny_module, tiny_batch):
    net = tiny_module.network
    seen = []
    net.vision.register_forward_hook(lambda mod, inp, out: seen.append(out.requires_grad))
    net.encode_images(tiny_batch["pixel_values"])
    for p in net.vision.parameters():
        p.requires_grad_(False)
    feats = net.encode_images(tiny_batch["pixel_values"])
    assert seen == [True, False]  # trainable tower keeps its graph, frozen tower builds none
    assert feats.requires_grad  # the projector still trains


def test_image_tokens_without_pixels_is_a_clear_error(tiny_module, tiny_batch):
    with pytest.raises(ValueError, match="Sample 0 holds image tokens but the batch has no pixel_values"):
        tiny_module(dict(tiny_batch, pixel_values=None))


def test_wrong_image_count_names_the_sample(tiny_module, tiny_batch):
    with pytest.raises(ValueError, match="first mismatching sample: index 3"):
        tiny_module(dict(tiny_batch, pixel_values=tiny_batch["pixel_values"][:3]))


IMAGES = Path(__file__).resolve().parents[1] / "assets" / "llava" / "images"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_uint8_images_give_the_output_of_images_normalised_on_the_cpu(tiny_module, tiny_batch, dtype):
    """The default uint8 path (normalised by the tower) and ImageProcessor(normalize=True) give the same hidden states."""
    net = tiny_module.network.to(dtype)
    paths = [str(IMAGES / n) for n in ("blue_wide.png", "red_circle.png", "green_tall.png", "yellow_cross.png")]
    cfg = tiny_module.image_data_config  # what the datamodules are bound with: the tower's own mean and std
    assert (tuple(cfg["mean"]), tuple(cfg["std"])) == (net.vision.pixel_mean, net.vision.pixel_std)
    raw = ImageProcessor(cfg, "pad").load_many(paths)  # (4, 3, 32, 32) uint8
    normalised = ImageProcessor(cfg, "pad", normalize=True).load_many(paths)  # (4, 3, 32, 32) float32
    assert raw.dtype == torch.uint8 and normalised.dtype == torch.float32
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    with torch.no_grad():
        h_raw = net(ids, mask, raw)  # (B, T, H)
        h_normalised = net(ids, mask, normalised)
        h_other = net(ids, mask, normalised.flip(0))
    assert h_raw.dtype == dtype
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(h_raw, h_normalised, **tol)
    assert not torch.allclose(h_raw.float(), h_other.float(), **tol)  # the images matter at this tolerance


@pytest.fixture()
def text_batch(tiny_module):
    """4 text-only synthetic samples (no image)."""
    dm = SyntheticVQADataModule(train_samples=4, val_samples=4, batch_size=4, mode="text")
    dm.bind(tiny_module.data_contract)
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"] is None
    return batch


def _tower_inputs(net) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    net.vision.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    return seen


@pytest.mark.parametrize("checkpointing", [False, True])
def test_text_only_training_batch_runs_a_zero_weight_image_through_the_frozen_tower(
    tiny_module, text_batch, checkpointing
):
    """LLaVA's placement: the projector gets zero gradients (not none), the hidden states are those of the text."""
    tiny_module.set_placement("vision", Placement("frozen"))
    tiny_module.set_placement("llm", Placement("lora", r=2))
    net = tiny_module.network
    if checkpointing:
        net.enable_activation_checkpointing()
    seen = _tower_inputs(net)
    net.eval()
    with torch.no_grad():
        reference = tiny_module(text_batch)  # (B, T, H), nothing but the text
    assert seen == []  # evaluation in one process skips the tower
    net.train()
    hidden = tiny_module(text_batch)
    assert torch.equal(hidden, reference)
    (image,) = seen
    assert image.shape == (1, *tiny_module.image_data_config["input_size"]) and image.dtype == net.vision_dtype
    assert not image.any()
    loss_sum, _ = tiny_module.compute_loss(hidden, text_batch["labels"])
    loss_sum.backward()
    projector = dict(net.projector.named_parameters())
    assert len(projector) == 4 and all(p.grad is not None and not p.grad.any() for p in projector.values())
    assert all(p.grad is None for p in net.vision.parameters())  # frozen: no graph through the tower
    lora = [p for n, p in net.llm.named_parameters() if "lora_A" in n]
    assert lora and all(p.grad is not None for p in lora)


def test_text_only_batch_in_bfloat16_keeps_the_text_embeddings(tiny_module, text_batch):
    net = tiny_module.network.to(torch.bfloat16)
    seen = _tower_inputs(net)
    embeds = net.embed(text_batch["input_ids"])  # training mode
    assert seen[0].dtype == torch.bfloat16
    assert torch.equal(embeds, net.llm.get_input_embeddings()(text_batch["input_ids"]))
