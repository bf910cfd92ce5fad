"""An S3 endpoint on loopback (moto's server mode) for tests, benchmarks and local trials: boto3
(and so libs.storage) talks to it over HTTP like any S3-compatible store, through ``AWS_ENDPOINT_URL``."""

import logging
import os
import uuid

import boto3
from moto.server import ThreadedMotoServer

from libs.local.broker import free_port


class MotoS3:
    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach this endpoint (test credentials; real ones come from a Secret)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> "MotoS3":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
        self.server.start()
        os.environ.update(self.env)  # this process's boto3 clients; children inherit it
        return self

    def stop(self) -> None:
        self.server.stop()

    def bucket(self, prefix: str = "embedforge") -> str:
        """A fresh bucket; returns its s3:// URI."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return f"s3://{name}"

    def __enter__(self) -> "MotoS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
