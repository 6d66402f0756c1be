"""The value head over any causal LM (ppo_core.value_head): shapes, dtypes, padding, save/load."""

from __future__ import annotations

import pytest
import torch

from ppo_core.value_head import (CausalLMWithValueHead, ValueHead, hidden_size_of,
                                 position_ids_from_mask)


def _tiny_llama(vocab=97):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      pad_token_id=0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def _tiny_neox(vocab=97):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                        pad_token_id=0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(cfg).eval()


def _tiny_gpt2(vocab=97):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                     pad_token_id=0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return GPT2LMHeadModel(cfg).eval()


def test_position_ids_from_left_padded_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]])
    assert torch.equal(position_ids_from_mask(mask), expected)
    with pytest.raises(ValueError, match="attention_mask"):
        position_ids_from_mask(torch.ones(5))


def test_value_head_is_float32_whatever_the_input():
    head = ValueHead(8)
    h = torch.randn(2, 3, 8, dtype=torch.bfloat16)
    v = head(h)
    assert v.shape == (2, 3) and v.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert head(h).dtype == torch.float32
    with pytest.raises(ValueError, match="hidden"):
        head(torch.randn(2, 8))
    with pytest.raises(ValueError, match="hidden_size"):
        ValueHead(0)


@pytest.mark.parametrize("factory", [_tiny_gpt2, _tiny_llama, _tiny_neox],
                         ids=["gpt2", "llama", "gpt_neox"])
def test_shapes_on_several_architectures(factory):
    lm = factory()
    model = CausalLMWithValueHead(lm)
    assert model.v_head.summary.in_features == hidden_size_of(lm.config) == 32
    ids = torch.randint(1, 97, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0                                                     # left padding
    logits, values = model(ids, mask)
    assert logits.shape == (3, 7, 97)
    assert values.shape == (3, 7) and values.dtype == torch.float32
    # the values are a linear function of the LM's own last hidden state
    out = lm(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
             output_hidden_states=True)
    torch.testing.assert_close(values, model.v_head(out.hidden_states[-1]))
    torch.testing.assert_close(logits, out.logits)
    # gradients reach both the backbone and the head
    (values.sum() + logits.float().mean()).backward()
    assert model.v_head.summary.weight.grad is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lm.parameters())


@pytest.mark.parametrize("factory", [_tiny_gpt2, _tiny_llama, _tiny_neox],
                         ids=["gpt2", "llama", "gpt_neox"])
def test_float32_head_gives_the_models_own_logits_and_values(factory):
    """`fp32_head` (used under bf16) recomputes the LM head from the backbone's last hidden
    state: in float32 it must give exactly the model's logits, and the same values."""
    model = CausalLMWithValueHead(factory())
    ids = torch.randint(1, 97, (3, 7))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    logits, values = model(ids, mask)
    logits32, values32 = model(ids, mask, fp32_head=True)
    assert logits32.dtype == torch.float32
    torch.testing.assert_close(logits32, logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(values32, values, rtol=0, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(ids, mask, fp32_head=True)[0].dtype == torch.float32


def test_float32_head_keeps_what_the_model_does_around_its_head():
    """Some models scale or cap the logits after the head's linear layer (FalconH1, Granite,
    Gemma 2) or transform the hidden state before it (BERT-style heads): the float32 head
    patches only the linear layer, so the model's own logits come out, in float32."""
    from transformers import GPT2LMHeadModel

    class ScaledHead(GPT2LMHeadModel):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = 0.25 * torch.tanh(out.logits / 3) * 3
            return out

    lm = _tiny_gpt2()
    scaled = ScaledHead(lm.config).eval()
    scaled.load_state_dict(lm.state_dict())
    model = CausalLMWithValueHead(scaled)
    ids = torch.randint(1, 97, (2, 5))
    logits, _ = model(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits32, _ = model(ids, fp32_head=True)
    assert logits32.dtype == torch.float32
    torch.testing.assert_close(logits32, logits, rtol=0, atol=2e-2)        # bf16 backbone
    assert "forward" not in scaled.lm_head.__dict__                         # patch undone


@pytest.mark.parametrize("factory", [_tiny_gpt2, _tiny_llama], ids=["gpt2", "llama"])
def test_left_padding_does_not_change_values(factory):
    model = CausalLMWithValueHead(factory())
    ids = torch.randint(1, 97, (1, 6))
    _, v_alone = model(ids, torch.ones_like(ids))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], dim=1)
    _, v_pad = model(padded, mask)
    assert (v_pad[:, 3:] - v_alone).abs().max() < 1e-5


def test_save_and_load_roundtrip(tmp_path):
    model = CausalLMWithValueHead(_tiny_llama())
    with torch.no_grad():
        model.v_head.summary.bias.fill_(0.75)                           # not the fresh init
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "value_head.safetensors" in files and "model.safetensors" in files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    loaded = CausalLMWithValueHead.from_pretrained(tmp_path)
    ids = torch.randint(1, 97, (2, 5))
    a = model(ids)
    b = loaded(ids)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    assert float(loaded.v_head.summary.bias.detach()) == 0.75


def test_rejects_a_non_model():
    with pytest.raises(ValueError, match="pretrained_model"):
        CausalLMWithValueHead(torch.nn.Linear(3, 3))
