"""libs/topics.py is the one declaration of topics and consumer groups."""

import re

from libs import topics
from libs.local.runtime import REPO_ROOT


def test_topic_names_are_unique_and_every_service_uses_only_declared_topics():
    names = [t.name for t in topics.ALL_TOPICS]
    assert len(names) == len(set(names))
    for name, service in topics.SERVICES.items():
        used = [t for g in service.groups for t in g.topics] + list(service.produces + service.reads)
        assert set(used) <= set(topics.ALL_TOPICS), name
        assert set(service.uses) == set(used)


def test_a_topic_that_follows_another_ones_partitions_has_its_count():
    by_name = {t.name: t for t in topics.ALL_TOPICS}
    for topic in topics.ALL_TOPICS:
        if topic.partitions_of:
            assert topic.partitions == by_name[topic.partitions_of].partitions


def test_consumer_group_ids_are_unique():
    ids = [g.id for s in topics.SERVICES.values() for g in s.groups]
    assert len(ids) == len(set(ids))


def test_no_module_outside_libs_topics_declares_a_topic():
    declaring = re.compile(r"\bTopic\(|\"forge\.[a-z.-]+\"")
    found = [
        str(path.relative_to(REPO_ROOT))
        for folder in ("libs", "services", "benchmarks", "tools")
        for path in (REPO_ROOT / folder).rglob("*.py")
        if path != REPO_ROOT / "libs" / "topics.py" and declaring.search(path.read_text(encoding="utf-8"))
    ]
    assert found == []
