"""From a template's prompt and answer to the typed fields of a RawExample.

The template's ``example`` map (libs/llm/templates.py) names the answer keys holding the
query, positive and negative, and the attributes that request lengths and similarity;
nothing downstream knows a template key. An answer that is not the expected JSON is
published with ``answer_error``, so the curator rejects it with that reason.
"""

from embedforge.v1 import messages_pb2 as pb
from libs.llm.parsing import AnswerError, parse_object, text_field
from libs.llm.templates import PromptTemplate, requested_words


def set_requests(raw: pb.RawExample, template: PromptTemplate) -> None:
    """What the prompt asks of the answer, from ``raw.attributes``: lengths, languages, similarity."""
    fields, attributes = template.example, raw.attributes
    for target, attribute in ((raw.query_words, fields.query_words), (raw.document_words, fields.document_words)):
        bounds = requested_words(attributes.get(attribute, "")) if attribute else None
        if bounds is not None:
            target.min, target.max = bounds
    raw.language = attributes.get("source_language") or attributes.get("language", "")
    raw.target_language = attributes.get("target_language", "")
    if fields.similarity in attributes:
        raw.similarity = float(attributes[fields.similarity])


def read_answer(raw: pb.RawExample, template: PromptTemplate, text: str) -> None:
    """Keep ``text`` as the raw output and fill the example it holds, or ``raw.answer_error``.
    A template without a positive key takes the corpus chunk as the positive."""
    raw.raw_output = text
    fields = template.example
    try:
        parsed = parse_object(text)
        query = text_field(parsed.value, fields.query)
        positive = text_field(parsed.value, fields.positive) if fields.positive else raw.chunk_text
        negatives = [text_field(parsed.value, fields.negative)] if fields.negative else []
    except AnswerError as exc:
        raw.answer_error.reason, raw.answer_error.detail = exc.reason, exc.detail[:500]
        return
    raw.query = query
    raw.positives.append(positive)
    raw.negatives.extend(negatives)
    raw.repairs.extend(parsed.repairs)
