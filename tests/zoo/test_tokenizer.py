"""Tokenizer loading (real from_pretrained path on a locally saved tokenizer) and its checks against the spec."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lightning_mm.zoo import ModelSpec, build_network, get_spec, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A 10-token word-level tokenizer without an image token, saved with save_pretrained."""
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "a", "b", "c", "d", "e", "f", "g"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return path


def _spec(tokenizer_dir, **fields) -> ModelSpec:
    return get_spec("tiny").replace(name="local-tok", tokenizer=str(tokenizer_dir), **fields)


def test_image_token_is_added_after_the_vocabulary(tokenizer_dir):
    tok = load_tokenizer(_spec(tokenizer_dir))
    assert tok.convert_tokens_to_ids("<image>") == 10 and len(tok) == 11
    assert tok.pad_token == "<unk>"  # LLaVA's choice when a tokenizer has no pad token
    assert tok("a <image> b", add_special_tokens=False)["input_ids"] == [3, 10, 4]


def test_incomplete_spec_takes_vocabulary_and_image_id_from_the_tokenizer(tokenizer_dir):
    net = build_network(_spec(tokenizer_dir))
    assert net.llm.get_input_embeddings().num_embeddings == 11
    assert net.image_token_id == 10


def test_tokenizer_contradicting_a_complete_spec_is_an_error(tokenizer_dir):
    with pytest.raises(ValueError, match="expects '<image>' at id 12"):
        load_tokenizer(_spec(tokenizer_dir, image_token_id=12, llm_config={"vocab_size": 16}))
    with pytest.raises(ValueError, match="has 8 embedding rows but its tokenizer has 11 tokens"):
        load_tokenizer(_spec(tokenizer_dir, image_token_id=10, llm_config={"vocab_size": 8}))


def test_complete_spec_builds_with_or_without_the_tokenizer(tokenizer_dir):
    spec = _spec(tokenizer_dir, image_token_id=10, llm_config={"vocab_size": 16})
    assert not spec.needs_tokenizer
    with torch.device("meta"):
        without = build_network(spec.replace(tokenizer="not/available/offline"))
    with_tok = build_network(spec, load_tokenizer(spec))
    assert without.llm.get_input_embeddings().num_embeddings == 16 == with_tok.llm.get_input_embeddings().num_embeddings
    assert without.image_token_id == with_tok.image_token_id == 10


def test_spec_replace_merges_dicts_and_rejects_unknown_fields():
    spec = get_spec("llava-1.5-7b").replace(llm_config={"num_hidden_layers": 2})
    assert spec.llm_config["num_hidden_layers"] == 2 and spec.llm_config["vocab_size"] == 32064
    with pytest.raises(ValueError, match="Unknown ModelSpec field"):
        spec.replace(vison_model="x")


@pytest.mark.parametrize(
    ("name", "placed"),
    [
        ("tiny-gemma3", {"<start_of_image>": 508, "<end_of_image>": 509, "<image_soft_token>": 511}),
        ("tiny-paligemma", {"<image>": 511}),
        ("tiny-internvl", {"<img>": 64, "</img>": 65}),
    ],
)
def test_builtin_synthetic_tokenizer_holds_the_special_tokens_of_the_tiny_entries_at_their_ids(name, placed):
    tok, plain = load_tokenizer(get_spec(name)), load_tokenizer(get_spec("tiny"))
    assert tok.convert_tokens_to_ids(list(placed)) == list(placed.values())
    assert len(tok) == max(placed.values()) + 1  # reserved tokens fill the gap after the task's words
    moved = int("<image>" in placed)  # <image> (id 4) moved to 511: the words after it move down by one
    assert tok.convert_ids_to_tokens(len(plain) - moved) == "<unused0>"
    assert tok.convert_tokens_to_ids("red") == plain.convert_tokens_to_ids("red") - moved
    assert tok.decode(tok.encode("What color is the shape?")) == "What color is the shape?"
    for token, token_id in placed.items():
        assert tok(f"red {token} blue", add_special_tokens=False)["input_ids"][1] == token_id


def test_a_special_token_id_inside_the_vocabulary_or_contradicting_the_tokenizer_is_an_error(tokenizer_dir):
    with pytest.raises(ValueError, match=r"Special token '<start_of_image>' at id 5: ids below 43.*'system' is 5"):
        load_tokenizer(get_spec("tiny-gemma3").replace(special_token_ids={"<start_of_image>": 5}))
    with pytest.raises(ValueError, match=r"expects special tokens at \{'<img>': 3\}"):
        load_tokenizer(_spec(tokenizer_dir, special_token_ids={"<img>": 3}))
