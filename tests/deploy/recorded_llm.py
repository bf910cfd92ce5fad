"""A recorded-response LLM host for the cluster proof: an OpenAI-compatible chat-completions
server (tests/libs/llm/fault_server.py) that answers examplegen's corpus-query prompts with the
real human questions of the passage in the prompt, from a BEIR folder (../shared/data/xquad-en).

Each passage's questions are handed out in turn, except its last one, which is never answered:
the proof searches with those held-out questions. Run as
``python -m tests.deploy.recorded_llm --data DIR --port 8000`` (it serves until killed).
"""

import argparse
import itertools
import json
import re
import threading
from pathlib import Path

from tests.libs.llm.fault_server import FaultServer, Reply

PASSAGE = re.compile(r"<passage>\s*(.*?)\s*</passage>", re.S)


def shingles(text: str, size: int = 6) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + size]) for i in range(max(1, len(words) - size + 1))}


def questions_by_passage(data: Path) -> dict[str, list[str]]:
    """Passage id -> its questions in qrels order."""
    queries = {q["_id"]: q["text"] for q in map(json.loads, (data / "queries.jsonl").read_text().splitlines())}
    by_passage: dict[str, list[str]] = {}
    for line in (data / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, passage_id, _ = line.split("\t")
        by_passage.setdefault(passage_id, []).append(queries[query_id])
    return by_passage


def held_out_questions(data: Path) -> dict[str, str]:
    """Passage id -> the question the recorded LLM never writes (for searching with)."""
    return {passage: questions[-1] for passage, questions in questions_by_passage(data).items() if len(questions) > 1}


class RecordedQuestions:
    """Chooses the reply to one chat request: a JSON query for the passage the prompt holds."""

    def __init__(self, data: Path):
        corpus = [json.loads(line) for line in (data / "corpus.jsonl").read_text().splitlines()]
        self.shingles = {doc["_id"]: shingles(doc["text"]) for doc in corpus}
        self.turns = {
            passage: itertools.cycle(questions[:-1])
            for passage, questions in questions_by_passage(data).items()
            if len(questions) > 1
        }
        self.lock = threading.Lock()

    def __call__(self, body: dict) -> Reply:
        prompt = body["messages"][-1]["content"]
        passage = PASSAGE.search(prompt)
        if passage is None:
            return Reply(status=400, text="the recorded LLM answers corpus-query prompts only")
        seen = shingles(passage.group(1))
        best = max(self.turns, key=lambda passage_id: len(self.shingles[passage_id] & seen))
        with self.lock:
            question = next(self.turns[best])
        return Reply(text=json.dumps({"query": question}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = FaultServer([], choose=RecordedQuestions(args.data), host="0.0.0.0", port=args.port)
    print(f"recorded LLM serving on :{args.port}", flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
