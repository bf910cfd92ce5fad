"""A recorded-response provider registered in litellm (stands in for a remote LLM API):
answers each prompt with a canned, schema-valid JSON object for the template it recognises."""

import json
import threading
import time

import litellm
from litellm import CustomLLM

ANSWERS = {
    '"user_query"': {
        "user_query": "how do tides form",
        "positive_document": "Tides are caused by the moon.",
        "hard_negative_document": "Waves are caused by wind.",
    },
    '"input_text"': {"input_text": "The delivery was late again.", "label": "negative", "misleading_label": "neutral"},
    '"S1"': {"S1": "A cat sleeps.", "S2": "A cat is sleeping.", "S3": "A dog barks."},
    '"input"': {"input": "heart attack", "positive_document": "myocardial infarction"},
    '"query"': {"query": "what causes coastal flooding"},
}


class RecordedProvider(CustomLLM):
    """``delay_s``: each answer takes that long (a slow remote model)."""

    def __init__(self, delay_s: float = 0.0):
        super().__init__()
        self.prompts: list[str] = []
        self.lock = threading.Lock()
        self.delay_s = delay_s

    def completion(self, model, messages, api_base, custom_prompt_dict, model_response, *args, **kwargs):
        prompt = "\n".join(m["content"] for m in messages)  # system (shared instructions) + user
        with self.lock:
            self.prompts.append(prompt)
        time.sleep(self.delay_s)
        answer = next(a for marker, a in ANSWERS.items() if marker in prompt)
        model_response.choices[0].message.content = json.dumps(answer)
        model_response.usage = litellm.Usage(
            prompt_tokens=len(prompt.split()), completion_tokens=9, total_tokens=len(prompt.split()) + 9
        )
        return model_response


def register_recorded(delay_s: float = 0.0) -> RecordedProvider:
    """Serve ``recorded/<anything>`` from a fresh RecordedProvider."""
    provider = RecordedProvider(delay_s)
    litellm.custom_provider_map = [p for p in litellm.custom_provider_map if p["provider"] != "recorded"] + [
        {"provider": "recorded", "custom_handler": provider}
    ]
    return provider
