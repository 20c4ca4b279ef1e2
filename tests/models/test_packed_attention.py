"""``sdpa_packed``: block-by-block attention of packed rows equals each sample run alone, and plain sdpa otherwise."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lightning_mm.models.packed_attention import PACKED_SDPA, sample_spans, use_packed_attention


@pytest.fixture()
def llm():
    config = AutoConfig.for_model(
        "llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=50,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).double()
    for p in model.parameters():  # norms away from their init
        p.data.add_(0.05 * torch.randn_like(p))
    return model


def test_spans_cut_where_positions_do_not_increase_by_one():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])
    assert sample_spans(positions) == [[(0, 3), (3, 5), (5, 6)], [(0, 6)]]


def test_packed_rows_equal_each_sample_alone_with_gradients(llm):
    a, b = torch.randint(0, 50, (1, 7)), torch.randint(0, 50, (1, 5))
    alone = [llm.model(input_ids=x, use_cache=False).last_hidden_state[0] for x in (a, b)]
    (alone[0].sum() + alone[1].sum()).backward()
    expected = {n: p.grad.clone() for n, p in llm.named_parameters() if p.grad is not None}
    assert len(expected) > 10
    llm.zero_grad()
    use_packed_attention(llm)
    assert llm.config._attn_implementation == PACKED_SDPA
    ids = torch.cat([a, b, torch.zeros(1, 3, dtype=torch.long)], dim=1)  # (1, 15): two samples, then padding
    positions = torch.cat([torch.arange(7), torch.arange(5), torch.arange(3)])[None]
    hidden = llm.model(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state[0]
    torch.testing.assert_close(hidden[:7], alone[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hidden[7:12], alone[1], rtol=1e-10, atol=1e-12)
    hidden[:12].sum().backward()
    for name, grad in expected.items():
        torch.testing.assert_close(llm.get_parameter(name).grad, grad, rtol=1e-9, atol=1e-12)


def test_unpacked_batches_run_plain_sdpa_and_the_switch_goes_back(llm):
    ids = torch.randint(1, 50, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    reference = llm.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    use_packed_attention(llm)
    ours = llm.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    torch.testing.assert_close(ours[mask.bool()], reference[mask.bool()], rtol=0, atol=0)
    use_packed_attention(llm, enable=False)
    assert llm.config._attn_implementation == "sdpa"
