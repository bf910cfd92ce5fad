"""Checks of a corpus-grounded query against its passage's title and the job's task: each problem
has its own rejection reason.

- ``contains_title``: the query holds the whole title of a long title (``TITLE_MIN_WORDS`` words, or
  ``TITLE_MIN_UNSPACED_CHARS`` characters in a script written without spaces: a sentence-like
  title, such as a paper's, that no user types in full), or starts with the title as a sentence of
  its own ("<title>. How does ...?"). A name inside a question is how users ask about an entity
  ("When was California State University, Long Beach founded?", "战国无双3是由哪两个公司开发的？"),
  so it is kept.
- ``restates_task``: the query describes the search instead of being one ("Find the abstracts of
  papers that support or refute the claim"): it uses the words of task definitions and most of
  its content words are the task's or those; or it says nothing beyond the task ("What is an
  encyclopedia of entities?" for a task about an encyclopedia of entities): every content word is
  the task's, so no one passage answers it.
- ``dangling_ending``: the query stops on a lead-in (":", ",", "such as", "e.g.", ...; libs.words).
"""

import re

from libs.words import UNSPACED, dangling_ending
from services.curator.text import normalize

# Encyclopedia titles and names run 1-6 words (96% of dbpedia-entity's 5,000; a trailing
# "(disambiguation)" not counted); paper titles and headlines run longer.
TITLE_MIN_WORDS = 7
DISAMBIGUATION = re.compile(r"\s*\([^()]*\)\s*$")
# Chinese and Japanese names are compounds, denser than running text (libs.words counts 1.7
# characters a word there): encyclopedia titles and names mostly run 2-10 characters, headline- or
# paper-like titles 12 and more.
TITLE_MIN_UNSPACED_CHARS = 12
# Words of task definitions ("Given a claim, retrieve abstracts that ..."), not of queries.
TASK_WORDS = frozenset(
    "given retrieve retrieving find search searching locate identify list query queries question questions document documents "
    "passage passages abstract abstracts article articles paper papers texts relevant answer answers engine task".split()
)
# Function words of four letters or more, which say nothing about whose words a query uses.
STOP_WORDS = frozenset(
    "that this what which with from does have about there their they when where into your will would should could "
    "than then them these those been were some".split()
)
MIN_TASK_WORDS = 2
RESTATEMENT_SHARE = 0.6
# A title used as the query's first sentence: the title, then a sentence mark.
TITLE_LEAD = r"\s*{}\s*[.:;!?|\u2013\u2014\u3002\uff1a-]"


def content_words(normalized: str) -> set[str]:
    return {w for w in normalized.split() if (len(w) >= 4 or UNSPACED.search(w)) and w not in STOP_WORDS}


def long_title(title: str) -> bool:
    title = DISAMBIGUATION.sub("", title)
    spaced_words = len(UNSPACED.sub(" ", title).split())
    return len(UNSPACED.findall(title)) >= TITLE_MIN_UNSPACED_CHARS or spaced_words >= TITLE_MIN_WORDS


def contains_title(query: str, title: str) -> bool:
    norm_title = normalize(title)
    if not norm_title:
        return False
    if re.match(TITLE_LEAD.format(re.escape(title.strip())), query, re.IGNORECASE):
        return True
    if not long_title(title):
        return False
    norm_query = normalize(query)
    return norm_title in norm_query if UNSPACED.search(norm_title) else f" {norm_title} " in f" {norm_query} "


def restates_task(query: str, task: str) -> bool:
    words = content_words(normalize(query))
    known = TASK_WORDS | content_words(normalize(task))
    if words and words <= known:
        return True
    if len(words) < 3 or len(words & TASK_WORDS) < MIN_TASK_WORDS:
        return False
    return len(words & known) >= RESTATEMENT_SHARE * len(words)


def corpus_query_problem(query: str, title: str, task: str) -> tuple[str, str] | None:
    """(reason, detail) of the first problem of a corpus-grounded query, or None."""
    if contains_title(query, title):
        return "contains_title", f"query contains the title {title[:80]!r}"
    if restates_task(query, task):
        return "restates_task", f"query restates the task {task[:80]!r}"
    ending = dangling_ending(query)
    if ending:
        return "dangling_ending", f"query ends on {ending!r}"
    return None
