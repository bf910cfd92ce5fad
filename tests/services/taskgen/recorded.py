"""A recorded-response provider registered in litellm (stands in for a remote LLM API):
each brainstorm call gets the next scripted answer text, or raises it when it is an exception."""

import threading
from collections.abc import Callable

import litellm
from litellm import CustomLLM


class ScriptedBrainstorm(CustomLLM):
    def __init__(self, answers: list[str | Exception], on_call: Callable[[int], None] | None = None):
        super().__init__()
        self.answers = list(answers)
        self.on_call = on_call
        self.prompts: list[str] = []
        self.lock = threading.Lock()

    def completion(self, model, messages, api_base, custom_prompt_dict, model_response, *args, **kwargs):
        with self.lock:
            self.prompts.append(messages[-1]["content"])
            number = len(self.prompts)
            text = self.answers.pop(0) if self.answers else "[]"
        if self.on_call is not None:
            self.on_call(number)
        if isinstance(text, Exception):
            raise text
        model_response.choices[0].message.content = text
        model_response.usage = litellm.Usage(prompt_tokens=50, completion_tokens=20, total_tokens=70)
        return model_response


def register_script(answers: list[str | Exception], on_call=None) -> ScriptedBrainstorm:
    """Serve ``scripted/<anything>`` from these answers, in order."""
    provider = ScriptedBrainstorm(answers, on_call)
    litellm.custom_provider_map = [p for p in litellm.custom_provider_map if p["provider"] != "scripted"] + [
        {"provider": "scripted", "custom_handler": provider}
    ]
    return provider
