"""Thread-safe model loading.

``from_pretrained(..., dtype=X)`` sets torch's process-wide default dtype to X while it builds
the model and restores the previous value after. Two loads with different dtypes on two threads
(a service loading a bf16 model beside a test or a service loading an fp32 one) interleave
their set/restore pairs and can leave the default at bf16 for the whole process, so later
``torch.zeros`` and model inits silently come out bf16. Every model in EmbedForge is therefore
loaded at float32, the process default nobody changes, and cast afterwards.
"""

import torch


def load_pretrained(model_class, path, dtype: torch.dtype = torch.float32, **kwargs):
    """``model_class.from_pretrained(path, **kwargs)`` built in float32, then cast to ``dtype``."""
    model = model_class.from_pretrained(path, dtype=torch.float32, **kwargs)
    return model if dtype == torch.float32 else model.to(dtype)
