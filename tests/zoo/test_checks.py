"""Names in a model's spec are checked when the module is constructed, before any fit: one paragraph per error."""

from __future__ import annotations

import pytest

from lightning_mm import MultimodalModule, get_spec, list_models
from lightning_mm.errors import ConfigError
from lightning_mm.zoo.checks import check_spec


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"template": "chatm"}, r"model_overrides\.template: unknown chat template 'chatm'\. Did you mean 'chatml'\?"),
        ({"projector": "mlp2x_gleu"}, r"model_overrides\.projector: unknown projector 'mlp2x_gleu'\. Did you mean"),
        ({"vision_model": "vit_tiny_patch16_22"}, r"model_overrides\.vision_model: Unknown timm vision model"),
        (
            {"vision_model": "vit_tiny_patch16_224.no_such_tag"},
            r"vision_model: timm has no pretrained tag 'no_such_tag'",
        ),
        ({"templte": "chatml"}, r"Unknown ModelSpec field\(s\) \['templte'\]\. Did you mean 'template'\?"),
    ],
    ids=["template", "projector", "tower", "tower-tag", "field"],
)
def test_an_unknown_name_in_model_overrides_fails_at_construction(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        MultimodalModule(model="tiny", model_overrides=overrides)
    assert "\n" not in str(info.value) and len(str(info.value)) < 700  # one paragraph; the known names grow


def test_an_unknown_template_no_longer_waits_for_predict():
    """Before, the module built, trained and failed only when ``predict`` looked the template up."""
    with pytest.raises(ValueError, match="chatm"):
        MultimodalModule(model="tiny", model_overrides={"template": "chatm"})


def test_known_names_pass_and_a_zoo_entry_is_named_when_the_override_is_not_the_culprit():
    MultimodalModule(model="tiny", model_overrides={"template": "vicuna_v1", "projector": "mlp3x_gelu"})
    spec = get_spec("tiny").replace(template="nope")
    with pytest.raises(ConfigError, match=r"^template of model 'tiny': unknown chat template 'nope'"):
        check_spec(spec)


def test_every_zoo_entry_names_known_parts():
    for name in list_models():
        check_spec(get_spec(name))


def test_an_unknown_zoo_name_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"Unknown model 'tiny-lava'\. Did you mean 'tiny-llava'\?") as info:
        get_spec("tiny-lava")
    assert "\n" not in str(info.value) and "lightning-mm zoo" in str(info.value)
