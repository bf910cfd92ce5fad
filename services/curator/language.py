"""Offline language identification with langid.py's bundled model (97 languages).

langid.classify multiplies a dense 7,480-feature vector by the model matrix; a text
activates a few hundred features, so this detector gathers only those rows (same
model, same scores, ~10x less work) and reads only the leading characters.
Unpacking langid's bz2 model string takes seconds, so the unpacked arrays are cached
as .npz (keyed by a hash of the model string) and later starts load them in milliseconds.
"""

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
from langid.langid import LanguageIdentifier, model

# Names an attribute may carry instead of an ISO 639-1 code.
NAMES = {
    "english": "en", "chinese": "zh", "mandarin": "zh", "spanish": "es", "french": "fr", "german": "de",
    "japanese": "ja", "korean": "ko", "russian": "ru", "portuguese": "pt", "italian": "it", "dutch": "nl",
    "arabic": "ar", "hindi": "hi", "bengali": "bn", "turkish": "tr", "vietnamese": "vi", "thai": "th",
    "indonesian": "id", "polish": "pl", "ukrainian": "uk", "swedish": "sv", "danish": "da", "norwegian": "no",
    "finnish": "fi", "greek": "el", "hebrew": "he", "czech": "cs", "romanian": "ro", "hungarian": "hu",
    "persian": "fa", "malay": "ms", "tamil": "ta", "urdu": "ur", "swahili": "sw", "catalan": "ca",
}  # fmt: skip
# Languages langid confuses with each other: a match within a group counts as a match.
CONFUSABLE = [{"ms", "id"}, {"no", "nb", "nn", "da"}, {"hr", "bs", "sr"}]


def language_code(value: str) -> str:
    """ISO 639-1 code of an attribute value ("en", "en-US", "English")."""
    value = value.strip().lower()
    return NAMES.get(value, value.split("-")[0].split("_")[0])


def same_language(detected: str, requested: str) -> bool:
    if detected == requested:
        return True
    return any(detected in group and requested in group for group in CONFUSABLE)


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embedforge"


def load_model(cache_dir: Path) -> dict[str, np.ndarray]:
    """langid's model as arrays, unpacked once and cached."""
    path = cache_dir / f"langid-{hashlib.sha256(model).hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as arrays:
            return dict(arrays)
    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=False)
    states = [state for state, indices in identifier.tk_output.items() if indices]
    arrays = {
        "next_move": np.asarray(identifier.tk_nextmove, dtype=np.int32),
        "output_states": np.asarray(states, dtype=np.int64),
        "output_lengths": np.asarray([len(identifier.tk_output[s]) for s in states], dtype=np.int64),
        "output_indices": np.asarray([i for s in states for i in identifier.tk_output[s]], dtype=np.int64),
        "class_given_feature": np.asarray(identifier.nb_ptc, dtype=np.float32),
        "class_prior": np.asarray(identifier.nb_pc, dtype=np.float32),
        "classes": np.asarray([str(c) for c in identifier.nb_classes]),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, **arrays)
    os.replace(tmp.name, path)
    return arrays


class LanguageDetector:
    """langid's naive Bayes, with each tokenizer state's feature rows summed ahead of time.

    A state of langid's byte DFA emits a fixed set of features, so the class scores of a
    text are the sum over visited states of per-state score vectors: one gather-and-sum.
    """

    def __init__(self, probe_chars: int = 200, cache_dir: Path | None = None):
        arrays = load_model(cache_dir or default_cache_dir())
        self.probe_chars = probe_chars
        self.next_move = arrays["next_move"].tolist()
        num_states = len(self.next_move) >> 8
        lengths = arrays["output_lengths"]
        feature_rows = arrays["class_given_feature"][arrays["output_indices"]]
        self.state_scores = np.zeros((num_states, feature_rows.shape[1]), dtype=np.float32)
        self.state_scores[arrays["output_states"]] = np.add.reduceat(feature_rows, np.cumsum(lengths) - lengths, axis=0)
        self.class_prior = arrays["class_prior"]
        self.classes = arrays["classes"].tolist()

    def detect(self, text: str) -> str:
        """The most likely ISO 639-1 code of the text's first ``probe_chars`` UTF-8 bytes."""
        next_move, state, visited = self.next_move, 0, []
        visit = visited.append
        for byte in text[: self.probe_chars].encode("utf-8", errors="ignore")[: self.probe_chars]:
            state = next_move[(state << 8) + byte]
            visit(state)
        if not visited:
            return "und"
        scores = self.state_scores[visited].sum(axis=0) + self.class_prior
        return self.classes[int(np.argmax(scores))]
