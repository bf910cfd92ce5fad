"""Model loading never moves torch's process-wide default dtype away from float32.

transformers sets the default dtype to the requested one while it builds a model; two threads
loading with different dtypes leave it at bf16 for the whole process (seen as flaky bf16/fp32
mismatches in unrelated tests). The recorded calls show each bf16 load only ever sets float32.
"""

import torch
from transformers import AutoModel

from libs.modeling.loading import load_pretrained


def test_a_bf16_load_only_sets_the_float32_default_and_returns_bf16_weights(tiny_models, monkeypatch):
    defaults_set: list[torch.dtype] = []
    real_set_default_dtype = torch.set_default_dtype

    def recording_set_default_dtype(dtype):
        defaults_set.append(dtype)
        real_set_default_dtype(dtype)

    monkeypatch.setattr(torch, "set_default_dtype", recording_set_default_dtype)
    model = load_pretrained(AutoModel, tiny_models["qwen2"], torch.bfloat16)
    assert defaults_set and set(defaults_set) == {torch.float32}
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32
