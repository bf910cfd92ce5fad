"""Offline language identification with langid.py's bundled model (97 languages).

langid.classify multiplies a dense 7,480-feature vector by the model matrix; a text
activates a few hundred features, so this detector gathers only those rows (same
model, same scores, ~10x less work) and reads only the leading characters.
Unpacking langid's bz2 model string takes seconds, so the unpacked arrays are cached
as .npz (keyed by a hash of the model string) and later starts load them in milliseconds.

The arrays are langid's undocumented internals: its public ``classify`` alone runs the curator
at ~0.2x this speed, far below its goal (benchmarks/README.md). So langid is pinned
(requirements-service.txt) and tests/services/curator/test_language.py checks this detector
against ``LanguageIdentifier.classify`` on the installed version.
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

    The DFA walk is vectorized too: langid's features are byte n-grams of at most four
    bytes, so the DFA state after byte *i* is the longest suffix of the text so far that is
    a prefix of a feature, which lies within bytes *i-3..i*. Walking from the start state
    over each position's last four bytes therefore gives every position's state at once:
    a table of the state after any two bytes read from the start, then two transitions,
    each an array gather instead of a Python loop over the bytes. A separator byte (0xFF,
    never in UTF-8) sends every state back to the start state and emits nothing: three of
    them in front give the first bytes their short windows, and several texts joined by it
    are identified in one pass.
    """

    SEPARATOR = 0xFF  # the byte written as b"\xff" below
    # Bytes identified per vectorized pass: large enough to amortize the array calls, small
    # enough that the gathered score rows (388 bytes per byte of text) stay in cache.
    CHUNK_BYTES = 4096
    # Probes identified lately and their language: a regenerated example repeats its texts, and
    # every query written for a corpus chunk has that chunk as its positive.
    RECENT = 4096

    def __init__(self, probe_chars: int = 200, cache_dir: Path | None = None):
        arrays = load_model(cache_dir or default_cache_dir())
        self.probe_chars = probe_chars
        self.recent: dict[bytes, str] = {}
        next_move = arrays["next_move"]
        num_states = len(next_move) >> 8
        lengths = arrays["output_lengths"]
        feature_rows = arrays["class_given_feature"][arrays["output_indices"]]
        self.state_scores = np.zeros((num_states, feature_rows.shape[1]), dtype=np.float32)
        self.state_scores[arrays["output_states"]] = np.add.reduceat(feature_rows, np.cumsum(lengths) - lengths, axis=0)
        self.class_prior = arrays["class_prior"]
        self.classes = arrays["classes"].tolist()
        table = next_move.reshape(num_states, 256)
        if self._max_depth(table) > 4 or (table[:, self.SEPARATOR] != 0).any() or self.state_scores[0].any():
            raise ValueError("langid model outside the vectorized walk's assumptions (features of at most 4 bytes, 0xFF unused)")
        self.next_move = next_move.astype(np.int16 if num_states <= np.iinfo(np.int16).max else np.int32)
        # State after two bytes read from the start state, indexed by (first << 8) + second.
        self.two_bytes = self.next_move[(self.next_move[:256].astype(np.intp)[:, None] << 8) + np.arange(256)].ravel()

    @staticmethod
    def _max_depth(table: np.ndarray) -> int:
        """Bytes read from the start state to reach the deepest state (= the longest feature prefix)."""
        seen = np.zeros(len(table), dtype=bool)
        seen[0], frontier, depth = True, np.array([0]), 0
        while True:
            reached = np.unique(table[frontier])
            frontier = reached[~seen[reached]]
            if not frontier.size:
                return depth
            seen[frontier] = True
            depth += 1

    def _probe(self, text: str) -> bytes:
        return text[: self.probe_chars].encode("utf-8", errors="ignore")[: self.probe_chars]

    def _states(self, joined: bytes) -> np.ndarray:
        """The DFA state after each byte of ``joined`` (texts joined by the separator)."""
        data = np.frombuffer(b"\xff\xff\xff" + joined, dtype=np.uint8).astype(np.intp)
        size, next_move = len(joined), self.next_move
        states = self.two_bytes[(data[:size] << 8) + data[1 : size + 1]]
        states = next_move[(states.astype(np.intp) << 8) + data[2 : size + 2]]
        return next_move[(states.astype(np.intp) << 8) + data[3:]]

    def detect(self, text: str) -> str:
        """The most likely ISO 639-1 code of the text's first ``probe_chars`` UTF-8 bytes."""
        return self.detect_many([text])[0]

    def detect_many(self, texts: list[str]) -> list[str]:
        """detect() of each text, in vectorized passes over about CHUNK_BYTES bytes at a time."""
        probes = [self._probe(text) for text in texts]
        detected = ["und"] * len(probes)  # an empty probe
        chunk, size = [], 0
        recent = self.recent
        for index, probe in enumerate(probes):
            if probe:
                known = recent.get(probe)
                if known is not None:
                    detected[index] = known
                    continue
                chunk.append(index)
                size += len(probe) + 1
                if size >= self.CHUNK_BYTES:
                    self._classify(probes, chunk, detected)
                    chunk, size = [], 0
        if chunk:
            self._classify(probes, chunk, detected)
        return detected

    def _classify(self, probes: list[bytes], indices: list[int], detected: list[str]) -> None:
        chunk = [probes[index] for index in indices]
        states = self._states(b"\xff".join(chunk))
        # Each text's rows summed on their own: faster than one reduceat over the chunk's rows,
        # and the very sum of the text identified alone.
        take, sums, start = self.state_scores.take, [], 0
        for probe in chunk:
            end = start + len(probe)
            sums.append(take(states[start:end], axis=0).sum(axis=0))
            start = end + 1
        scores = np.stack(sums) + self.class_prior
        recent = self.recent
        for index, best in zip(indices, np.argmax(scores, axis=1).tolist()):
            detected[index] = recent[probes[index]] = self.classes[best]
        while len(recent) > self.RECENT:
            del recent[next(iter(recent))]  # the oldest
