"""Job specs as YAML files (what `make run JOB=...` takes) to and from the JobSpec contract."""

import re
from pathlib import Path

import yaml
from google.protobuf import json_format

from embedforge.v1 import messages_pb2 as pb
from libs.corpus import DEFAULT_CHUNK_WORDS
from libs.dataroots import is_uri

CATEGORY_NAMES = {
    name.removeprefix("CATEGORY_").lower(): value for name, value in pb.Category.items() if value != pb.CATEGORY_UNSPECIFIED
}


def job_spec_from_dict(data: dict, base_dir: Path | None = None) -> pb.JobSpec:
    """Build a JobSpec; relative paths resolve against ``base_dir`` (the YAML file's folder).

    ``languages`` is a mapping code -> weight; ``categories`` maps a category name
    (retrieval, short_matching, ...) to ``{tasks, examples_per_task}``; ``training`` holds
    TrainingSpec fields by name. Unknown keys are errors, not silently ignored.
    """
    data = dict(data)
    spec = pb.JobSpec()
    for code, weight in (data.pop("languages", None) or {}).items():
        spec.languages.add(language=str(code), weight=float(weight))
    for name, target in (data.pop("categories", None) or {}).items():
        if name not in CATEGORY_NAMES:
            raise ValueError(f"unknown category {name!r}; expected one of {sorted(CATEGORY_NAMES)}")
        target = target or {}
        unknown = set(target) - {"tasks", "examples_per_task"}
        if unknown:
            raise ValueError(f"category {name}: unknown keys {sorted(unknown)}")
        spec.categories.add(
            category=CATEGORY_NAMES[name],
            num_tasks=int(target.get("tasks", 0)),
            examples_per_task=int(target.get("examples_per_task", 0)),
        )
    training = data.pop("training", None) or {}
    try:
        json_format.ParseDict(training, spec.training)
        json_format.ParseDict(data, spec, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise ValueError(f"invalid job spec: {exc}") from exc
    if base_dir is not None:  # relative paths are the YAML file's; object URIs stay as they are
        if spec.corpus_path and not is_uri(spec.corpus_path):
            spec.corpus_path = str((base_dir / spec.corpus_path).resolve())
        spec.eval_paths[:] = [p if is_uri(p) else str((base_dir / p).resolve()) for p in spec.eval_paths]
    if not spec.domain.strip():
        raise ValueError("invalid job spec: 'domain' must describe the domain")
    return spec


def load_job_spec(path: str | Path) -> pb.JobSpec:
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a job spec is a YAML mapping")
    return job_spec_from_dict(data, base_dir=path.parent)


def corpus_chunk_words(spec: pb.JobSpec) -> int:
    """Words per chunk of the job's documents: generation and mining cut them alike."""
    return spec.corpus_chunk_words or DEFAULT_CHUNK_WORDS


# The task definition of a job that gives none and whose drafted one failed: about the domain's first sentence.
DEFAULT_TASK = "Given a search query, retrieve relevant passages about {subject}"
MAX_SUBJECT_WORDS = 16


def default_task(domain: str) -> str:
    """A short task definition from the domain's first sentence (or clause), in E5 style."""
    first = re.split(r"(?<=[.!?])\s|[:;\n\u3002\uff1a\uff1b]", domain.strip(), maxsplit=1)[0]
    return DEFAULT_TASK.format(subject=" ".join(first.split()[:MAX_SUBJECT_WORDS]).rstrip(".,!? "))
