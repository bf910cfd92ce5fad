"""A consumer process for the at-least-once test: forwards each Task on forge.tasks to
forge.examples.raw keyed by task id. ``FORWARDER_DELAY_S`` slows each message so the test
can SIGKILL it between producing outputs and committing offsets."""

import os
import sys
import threading
import time

from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.kafka import ConsumerLoop, Outgoing, ProtoProducer, Received, Subscription, per_message
from libs.settings import KafkaSettings
from libs.topics import ConsumerGroup

DELAY_S = float(os.environ.get("FORWARDER_DELAY_S", "0"))


def forward(record: Received):
    time.sleep(DELAY_S)
    yield Outgoing(
        topics.EXAMPLES_RAW, record.key, pb.RawExample(example_id=record.message.task_id, task_id=record.message.task_id)
    )


if __name__ == "__main__":
    settings = KafkaSettings.model_validate_json(sys.argv[1])
    producer = ProtoProducer(settings, client_id="forwarder")
    ConsumerLoop(
        settings, ConsumerGroup("forwarder", (topics.TASKS,)), [Subscription(topics.TASKS, per_message(forward))], producer
    ).run(threading.Event())
