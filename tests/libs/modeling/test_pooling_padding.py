"""Pooling is correct with left and right padding, for decoders (EOS, last token) and encoders."""

import pytest
import torch

from libs.modeling.embedder import Embedder, ModelConfig
from libs.modeling.pooling import last_token_pool, query_prompt, without_prompts

TEXTS = ["a short one", "a much longer sentence that needs far more tokens than the first"]


def test_last_token_pool_picks_the_last_real_token_on_either_side():
    hidden = torch.arange(2 * 4, dtype=torch.float).view(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token_pool(hidden, right).flatten().tolist() == [1.0, 7.0]
    assert last_token_pool(hidden, left).flatten().tolist() == [3.0, 7.0]


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_decoder_embeddings_are_identical_with_left_and_right_padding(tiny_models, kind):
    left = Embedder(ModelConfig(tiny_models[kind], padding_side="left", bf16=False))
    right = Embedder(ModelConfig(tiny_models[kind], padding_side="right", bf16=False))
    assert left.pooling == "last_token" and left.append_eos
    alone = torch.cat([left.encode([t]) for t in TEXTS])
    assert torch.allclose(left.encode(TEXTS), alone, atol=1e-5)
    assert torch.allclose(right.encode(TEXTS), alone, atol=1e-5)


def test_decoder_inputs_end_with_eos_on_right_padding(tiny_models):
    embedder = Embedder(ModelConfig(tiny_models["llama"], padding_side="right", bf16=False))
    inputs = embedder.tokenize(TEXTS)
    last = inputs["attention_mask"].sum(1) - 1
    assert inputs["input_ids"][torch.arange(2), last].tolist() == [embedder.tokenizer.eos_token_id] * 2


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_encoder_embeddings_do_not_depend_on_batch_padding(tiny_models, pooling):
    embedder = Embedder(ModelConfig(tiny_models["bert"], pooling=pooling, bf16=False))
    alone = torch.cat([embedder.encode([t]) for t in TEXTS])
    assert torch.allclose(embedder.encode(TEXTS), alone, atol=1e-5)


def test_prompt_tokens_are_masked_after_the_padding_on_either_side():
    right = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert without_prompts(right, [2, 0]).tolist() == [[0, 0, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert without_prompts(left, [2, 3]).tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]


def test_query_prompts_follow_the_model_family():
    assert query_prompt("Find the place", "last_token") == "Instruct: Find the place\nQuery: "  # E5-mistral, decoders
    assert query_prompt("Find the place", "mean") == "Find the place: "  # INSTRUCTOR / BGE, encoders
    assert query_prompt("Find the place", "cls") == "Find the place: "
    assert query_prompt("", "mean") == query_prompt("", "last_token") == ""


def test_mean_pooling_leaves_the_instruction_prompt_out(tiny_models):
    embedder = Embedder(ModelConfig(tiny_models["bert"], bf16=False))
    prompt = embedder.query_prompt("Find the place")
    assert prompt == "Find the place: "
    prompt_tokens = len(embedder.tokenizer(prompt)["input_ids"]) - 1  # [CLS] and the prompt
    with torch.no_grad():
        hidden = embedder.model(**embedder.tokenizer([prompt + "capital of France"], return_tensors="pt")).last_hidden_state[0]
    expected = torch.nn.functional.normalize(hidden[prompt_tokens:].mean(dim=0), dim=-1)
    batch = embedder.encode(["capital of France", TEXTS[1]], prompts=[prompt, ""])  # padded beside a longer plain text
    assert torch.allclose(batch[0], expected, atol=1e-5)
    assert torch.allclose(batch[1], embedder.encode([TEXTS[1]])[0], atol=1e-5)
    assert torch.allclose(embedder.encode_queries(["capital of France"], "Find the place")[0], expected, atol=1e-5)
    # The same characters without a prompt beside them are all pooled: a document is never parsed for one.
    assert not torch.allclose(embedder.encode([prompt + "capital of France"])[0], expected, atol=1e-3)
    including = Embedder(ModelConfig(tiny_models["bert"], include_prompt=True, bf16=False))
    assert not torch.allclose(including.encode(["capital of France"], prompts=[prompt])[0], expected, atol=1e-3)
