"""Model handoff through object storage: from a finished export of all-MiniLM-L6-v2 to every
embedder replica serving it. The upload (libs.storage, sha256 manifest) goes to S3 on moto's
server (a real HTTP endpoint on loopback), ModelReady goes through a real tansu broker, and each
replica is its own ``python -m services.embedder`` process with its own state dir: it downloads
the folder into its cache, verifies every digest, loads the model and swaps.

Writes (merges) the keys ``model_handoff_*`` into benchmarks/results/cluster.json.
Run: PYTHONPATH=.:gen .venv/bin/python benchmarks/cluster.py   (BENCH_REPLICAS, default 2)
"""

import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from embedforge.v1 import embedder_pb2 as api
from embedforge.v1 import embedder_pb2_grpc as api_grpc
from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.kafka import ProtoProducer
from libs.local.broker import TansuBroker
from libs.local.objectstore import MotoS3
from libs.local.runtime import LocalRuntime
from libs.storage import Storage
from services.embedder.service import default_model_path

REPLICAS = int(os.environ.get("BENCH_REPLICAS", "2"))
RESULTS = Path(__file__).with_name("results") / "cluster.json"


def serving(stub: api_grpc.EmbedderServiceStub) -> str:
    return stub.GetModelInfo(api.GetModelInfoRequest(), timeout=5).model_id


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    export = work / "export"
    shutil.copytree(default_model_path(), export)  # the trainer's exported folder
    model_id = f"minilm-{uuid.uuid4().hex[:6]}"
    with TansuBroker(log_path=work / "broker.log") as broker, MotoS3() as s3:
        uri = s3.bucket() + "/embedforge"
        runtimes = []
        try:
            for i in range(REPLICAS):
                runtime = LocalRuntime(work / f"replica-{i}", services=("embedder",), topic_prefix="bench.", storage_uri=uri, extra_env={"EMBEDDER_REPLICA_ID": f"replica-{i}", "EMBEDDER_TORCH_THREADS": "1"})
                runtime.start_broker(broker)
                runtime.start_service("embedder")
                runtimes.append(runtime)
            for runtime in runtimes:
                runtime.wait_healthy("embedder", timeout_s=300)
            stubs = [api_grpc.EmbedderServiceStub(r.channel("embedder")) for r in runtimes]
            producer = ProtoProducer(runtimes[0].kafka_settings, client_id="bench")
            time.sleep(8)  # every replica's forge.models group has its assignment

            started = time.perf_counter()  # export finished
            stored = Storage(uri).put_folder(export, f"models/{model_id}")
            uploaded = time.perf_counter() - started
            producer.send_and_wait(topics.MODELS, model_id, pb.ModelReady(model_id=model_id, uri=stored.uri, manifest_digest=stored.digest, dimensions=384, pooling="mean", max_length=256))
            serving_after = {}
            while len(serving_after) < REPLICAS:
                for i, stub in enumerate(stubs):
                    if i not in serving_after and serving(stub) == model_id:
                        serving_after[i] = time.perf_counter() - started
                assert time.perf_counter() - started < 600, "replicas did not swap in 10 minutes"
                time.sleep(0.05)
            producer.close()
        finally:
            for runtime in runtimes:
                runtime.stop()
    size = sum(p.stat().st_size for p in export.rglob("*") if p.is_file())
    shutil.rmtree(work, ignore_errors=True)
    figures = {
        "model_handoff_s": round(max(serving_after.values()), 3),
        "model_handoff_upload_s": round(uploaded, 3),
        "model_handoff_per_replica_s": [round(serving_after[i], 3) for i in range(REPLICAS)],
        "model_handoff_replicas": REPLICAS,
        "model_handoff_model": "all-MiniLM-L6-v2",
        "model_handoff_model_bytes": size,
        "model_handoff_storage": "s3 (moto server on loopback)",
        "model_handoff_machine": f"{platform.machine()}, {os.cpu_count()} cpus",
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(figures)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
