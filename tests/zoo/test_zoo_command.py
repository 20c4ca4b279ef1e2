"""``lightning-mm zoo``: the table of models (name, vision, LLM, params), offline."""

from __future__ import annotations

from lightning_mm import list_models
from lightning_mm.cli import main
from lightning_mm.commands.zoo import format_count


def test_table_has_name_family_vision_llm_and_exact_params(capsys):
    assert main(["zoo", "llava-1.5-7b", "--exact"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split()[:5] == ["name", "family", "vision", "llm", "params"]
    assert row.split()[:6] == [
        "llava-1.5-7b",
        "llava",
        "vit_large_patch14_clip_336",
        "llava-hf/llava-1.5-7b-hf",
        "7,063,427,072",
        "576",
    ]
    assert main(["zoo", "llava-1.5-7b-components", "--exact"]) == 0
    _, row = capsys.readouterr().out.strip().splitlines()
    assert row.split()[1:5] == ["llava", "vit_large_patch14_clip_336.openai", "lmsys/vicuna-7b-v1.5", "7,063,427,072"]


def test_pattern_filters_and_unknown_pattern_fails(capsys):
    assert main(["zoo", "tiny*", "-v"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[-1] == "description"
    assert [line.split()[0] for line in lines[1:]] == list_models("tiny*")
    assert main(["zoo", "nothing-*"]) == 1


def test_format_count():
    assert [format_count(n) for n in (7_063_427_072, 924_095_168, 489_472, 12)] == ["7.06B", "924.1M", "489.5K", "12"]


def test_size_dependent_models_print_their_image_tokens_per_tile_or_view(capsys):
    assert main(["zoo", "tiny-llava-next"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[1].split()[-2] == "16/tile"  # 4 x 4 tokens a tile
    assert main(["zoo", "smolvlm-256m"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[1].split()[-2] == "64/view"  # 512 px view, pixel shuffle 4
