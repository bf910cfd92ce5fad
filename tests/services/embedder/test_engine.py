"""The inference engine: folder declarations, agreement with sentence-transformers, order
under length bucketing, bf16 quality, decoder last-token pooling with EOS."""

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer, LlamaConfig, LlamaModel

from libs.modeling.embedder import bf16_supported
from services.embedder.engine import EmbeddingModel, length_batches, pack_linears, spec_from_folder

TEXTS = [
    "short",
    "A considerably longer sentence that needs many more tokens than the others in this list, to force padding.",
    "Medium length text about embeddings.",
    "北京是中国的首都。",
]


def test_pooling_normalization_and_length_come_from_the_folder(minilm_path, tiny_model_path):
    minilm = spec_from_folder(minilm_path)
    tiny = spec_from_folder(tiny_model_path)
    assert (minilm.pooling, minilm.normalize, minilm.max_length) == ("mean", True, 256)
    assert (tiny.pooling, tiny.normalize, tiny.max_length) == ("cls", False, 128)


def test_explicit_event_fields_override_the_folder(tiny_model_path):
    spec = spec_from_folder(tiny_model_path, model_id="m7", pooling="mean", max_length=64, query_instruction="Find")
    assert (spec.model_id, spec.pooling, spec.max_length, spec.query_instruction) == ("m7", "mean", 64, "Find")


def test_a_folder_without_a_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a model folder"):
        spec_from_folder(str(tmp_path))


def test_fp32_engine_matches_sentence_transformers(minilm_path):
    engine = EmbeddingModel(spec_from_folder(minilm_path), dtype="fp32")
    reference = SentenceTransformer(minilm_path, device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(engine.encode(engine.tokenize(TEXTS)), reference, atol=1e-5)


def test_a_folder_that_leaves_prompts_out_of_pooling_matches_sentence_transformers(minilm_path, tmp_path):
    reference = SentenceTransformer(minilm_path, device="cpu")
    reference[1].include_prompt = False
    folder = str(tmp_path / "prompt-excluded")
    reference.save(folder)
    engine = EmbeddingModel(spec_from_folder(folder), dtype="fp32")
    assert not engine.spec.include_prompt
    prompt = engine.query_prompt("Retrieve passages that answer the question")
    assert prompt == "Retrieve passages that answer the question: "  # an encoder's prompt (libs.modeling.pooling)
    queries = ["how tall is Everest", "who wrote Hamlet"]
    vectors = engine.encode(engine.tokenize(queries, prompt) + engine.tokenize(TEXTS))  # queries and documents in one batch
    np.testing.assert_allclose(vectors[:2], reference.encode(queries, prompt=prompt), atol=1e-5)
    np.testing.assert_allclose(vectors[2:], reference.encode(TEXTS), atol=1e-5)
    including = EmbeddingModel(spec_from_folder(minilm_path), dtype="fp32")
    assert (including.encode(including.tokenize(queries[:1], prompt)) * vectors[:1]).sum() < 0.99


def test_bf16_engine_stays_close_to_fp32(minilm_path):
    fp32 = EmbeddingModel(spec_from_folder(minilm_path), dtype="fp32")
    bf16 = EmbeddingModel(spec_from_folder(minilm_path), dtype="bf16")
    a, b = fp32.encode(fp32.tokenize(TEXTS)), bf16.encode(bf16.tokenize(TEXTS))
    assert (a * b).sum(axis=1).min() > 0.99


def test_rows_come_back_in_input_order_whatever_the_batching(minilm):
    ids = minilm.tokenize(TEXTS * 3)
    together = minilm.encode(ids)
    alone = np.concatenate([minilm.encode([row]) for row in ids])
    np.testing.assert_allclose(together, alone, atol=5e-3)


def test_length_batches_sort_by_length_and_respect_the_token_budget():
    lengths = [5, 50, 7, 6, 49, 100, 5]
    batches = length_batches(lengths, budget=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 100
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory, minilm_path):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tokenizer.eos_token = "[unused0]"
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    LlamaModel(config).save_pretrained(folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))
    return str(folder)


def test_a_decoder_appends_eos_and_pools_its_last_token(tiny_decoder):
    engine = EmbeddingModel(spec_from_folder(tiny_decoder), dtype="fp32")
    assert engine.spec.pooling == "last_token"
    rows = engine.tokenize(["one", "a longer input text"])
    assert all(row.ids[-1] == engine.tokenizer.eos_token_id for row in rows)
    model = AutoModel.from_pretrained(tiny_decoder).eval()
    with torch.inference_mode():
        expected = [model(input_ids=torch.tensor([row.ids])).last_hidden_state[0, -1].numpy() for row in rows]
    np.testing.assert_allclose(engine.encode(rows), np.stack(expected), atol=1e-5)


@pytest.mark.skipif(
    not bf16_supported(), reason="packed bf16 linears need a CPU with native bf16 (AVX-512 BF16 / AMX); this one has none"
)
def test_bf16_on_cpu_packs_every_linear_layer_and_fuses_gelu_and_residual_adds(minilm_path):
    engine = EmbeddingModel(spec_from_folder(minilm_path), dtype="bf16")
    kinds = {type(m).__name__ for m in engine.model.modules()}
    assert "Linear" not in kinds
    assert {"PackedLinear", "PackedResidualOutput"} <= kinds
    assert not any(type(m).__name__ == "GELUActivation" for m in engine.model.modules())


NATIVE_BF16 = pytest.mark.skipif(not bf16_supported(), reason="bf16 oneDNN kernels need AVX-512 BF16 / AMX")


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=NATIVE_BF16)])
def test_packed_linears_compute_what_the_public_modules_do_on_the_pinned_torch(minilm_path, dtype):
    """pack_linears relies on private oneDNN ops (torch.ops.mkldnn._reorder_linear_weight and
    _linear_pointwise, plain and .binary), kept because they cut 12% of the CPU time of bf16 serving
    (benchmarks/README.md); torch is pinned in requirements-torch.txt. On the installed torch they must
    exist and give the hidden states of the unpacked model (nn.Linear, GELU, residual add): a torch
    upgrade that drops or changes them fails here instead of serving different vectors."""
    assert torch.__version__.split("+")[0] == "2.13.0", "re-verify the private ops below before moving the torch pin"
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    inputs = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        model = AutoModel.from_pretrained(minilm_path, dtype=torch.float32).to(dtype).eval()
        public = model(**inputs).last_hidden_state.float()
        pack_linears(model, rows_hint=4096)
        packed = model(**inputs).last_hidden_state.float()
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    mask = inputs["attention_mask"].bool()
    if dtype == torch.float32:
        torch.testing.assert_close(packed[mask], public[mask], atol=1e-4, rtol=1e-4)
    else:
        assert torch.nn.functional.cosine_similarity(packed[mask], public[mask], dim=-1).min() > 0.99
