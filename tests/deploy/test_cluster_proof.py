"""The rendered chart, run on separate hosts that share nothing but the network.

The chart is the source of truth: ``helm template`` with tests/deploy/values-proof.yaml, and
each service is started with its Deployment's environment (ConfigMap + env + Secret refs) on
top of its image's (the Dockerfile's ENV, with /opt/venv, /app and /tmp mapped to this
machine), running its image's ENTRYPOINT. Every service, the broker (tansu), an S3 endpoint
(moto's server mode) and the LLM (an OpenAI-compatible server answering with xquad-en's recorded
human questions, tests/deploy/recorded_llm.py) runs in its own network namespace as its own
unprivileged user, with its own empty state dir that no other host can read; the hosts file of
each namespace maps the chart's Service names to the hosts (tests/deploy/hosts.py).

A corpus-only job over xquad-en passages runs through to a served model. Then the trainer's
host is killed mid-run (SIGKILL to every process in its namespace) and started again with an
empty state dir: the run resumes from its checkpoint in object storage, the final model is
served, and the embedder answers throughout. Search with held-out questions finds their passage.

A second embedder replica needs Qdrant in server mode, and no Qdrant server binary exists here:
that case is covered by the chart refusing two replicas on embedded Qdrant (below) and by the
URL wiring test of tests/deploy/test_settings_contract.py.
"""

import base64
import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import boto3
import grpc
import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from embedforge.v1 import embedder_pb2, embedder_pb2_grpc, examplegen_pb2, examplegen_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from embedforge.v1 import curator_pb2, curator_pb2_grpc, taskgen_pb2, taskgen_pb2_grpc
from embedforge.v1 import messages_pb2 as pb
from libs import topics
from libs.certs import new_ca, new_certificate
from libs.grpc import traced_channel, wait_until_serving
from libs.kafka import ProtoProducer
from libs.local.broker import tansu_binary
from libs.local.pipeline import start_run
from libs.settings import KafkaSettings, TlsSettings
from tests.deploy import image
from tests.deploy.hosts import Network, host_venv, namespaces_available, wait_for_tcp
from tests.deploy.recorded_llm import held_out_questions
from tests.deploy.rendering import REPO, RELEASE, SERVICES, helm_template, objects, pod_environment, render

unavailable = namespaces_available()
pytestmark = pytest.mark.skipif(unavailable is not None, reason=f"separate hosts need network namespaces: {unavailable}")

PROOF_VALUES = Path(__file__).with_name("values-proof.yaml")
SECRETS = {("proof-s3", "access-key-id"): "proof-access-key", ("proof-s3", "secret-access-key"): "proof-secret-key"}
BUCKET = "proof-models"
DOCUMENTS = 24
CHECKPOINT_EVERY = 5  # TRAINER_CHECKPOINT_EVERY in values-proof.yaml
GRPC_PORT = 50051


def image_environment(service: str, venv_bin: Path, host_tmp: Path) -> dict[str, str]:
    """The final stage's ENV of the service's image, mapped onto this machine (the ENTRYPOINT's
    shell finds the venv's python on the mapped PATH)."""
    mapping = {"/opt/venv/bin": str(venv_bin), "/app": str(REPO), "/tmp": str(host_tmp)}
    # One pass over all image paths: a mapped path (the venv under /tmp) must not be mapped again.
    pattern = re.compile(rf"(?<![\w/])({'|'.join(map(re.escape, mapping))})(?=/|:|$)")
    environment = {}
    for name, value in image.environment(service).items():
        value = pattern.sub(lambda match: mapping[match.group(1)], value)
        environment[name] = value.replace("$PATH", "/usr/bin:/bin")
    return environment


def mount_secret_volumes(deployment: dict, secrets: dict[str, dict[str, bytes]], host_dir: Path, uid: int) -> dict[str, str]:
    """Write each Secret volume of the pod into ``host_dir`` as the kubelet would (its items,
    readable by the host's user only); returns mount path -> folder on this machine."""
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    mount_paths = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    mounted = {}
    for volume in spec["volumes"]:
        if "secret" in volume:
            folder = host_dir / volume["name"]
            folder.mkdir()
            for item in volume["secret"]["items"]:
                (folder / item["path"]).write_bytes(secrets[volume["secret"]["secretName"]][item["key"]])
                os.chown(folder / item["path"], uid, uid)
                (folder / item["path"]).chmod(0o400)
            os.chown(folder, uid, uid)
            mounted[mount_paths[volume["name"]]] = str(folder)
    return mounted


def service_environment(
    docs: list[dict], service: str, venv_bin: Path, state_dir: Path, host_tmp: Path, mounts: dict[str, str]
) -> dict[str, str]:
    deployment = objects(docs, "Deployment")[f"{RELEASE}-embedforge-{service}"]
    environment = {**image_environment(service, venv_bin, host_tmp), **pod_environment(docs, deployment, SECRETS)}
    for name, value in environment.items():
        for mount_path, folder in mounts.items():
            if value.startswith(mount_path + "/"):
                environment[name] = folder + value.removeprefix(mount_path)
    environment[f"{service.upper()}_STATE_DIR"] = str(state_dir)  # the pod's emptyDir at storage.mountPath
    environment["HF_HUB_OFFLINE"] = "1"  # these hosts have no route out; models come from packages
    return environment


class EmbedProbe(threading.Thread):
    """Calls Embed every 0.2 s until stopped; counts the calls that failed."""

    def __init__(self, channel: grpc.Channel):
        super().__init__(daemon=True)
        self.stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        self.calls, self.failures = 0, []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            self.calls += 1
            try:
                self.stub.Embed(
                    embedder_pb2.EmbedRequest(texts=["is the embedder still answering?"], kind=embedder_pb2.INPUT_KIND_QUERY),
                    timeout=10,
                )
            except grpc.RpcError as error:
                self.failures.append(error.code().name)


def create_topics_as_the_topic_job_would(docs: list[dict], kafka: KafkaSettings) -> None:
    """The rendered topic Job's TOPICS lines (name partitions retention.ms cleanup.policy), created
    with its TOPIC_PREFIX and REPLICATION_FACTOR."""
    (job,) = objects(docs, "Job").values()
    environment = pod_environment(docs, job)
    admin = KafkaAdminClient(**kafka.client_kwargs())
    try:
        admin.create_topics(
            [
                NewTopic(
                    environment["TOPIC_PREFIX"] + name,
                    num_partitions=int(partitions),
                    replication_factor=int(environment["REPLICATION_FACTOR"]),
                    topic_configs={"retention.ms": retention, "cleanup.policy": cleanup},
                )
                for name, partitions, retention, cleanup in (
                    line.split() for line in environment["TOPICS"].splitlines() if line.strip()
                )
            ]
        )
    finally:
        admin.close()


def cluster_secrets(docs: list[dict]) -> dict[str, dict[str, bytes]]:
    """The Secrets the pods mount: the gRPC certificate cert-manager would issue for the rendered
    Certificate (its dnsNames, from the rendered CA chain) and the Secrets the chart renders."""
    (certificate,) = [c for c in objects(docs, "Certificate").values() if not c["spec"].get("isCA")]
    ca = new_ca("embedforge proof CA")
    served = new_certificate(ca, certificate["spec"]["dnsNames"][0], certificate["spec"]["dnsNames"])
    secrets = {certificate["spec"]["secretName"]: {"tls.crt": served.cert_pem, "tls.key": served.key_pem, "ca.crt": ca.cert_pem}}
    for name, secret in objects(docs, "Secret").items():
        secrets[name] = {key: base64.b64decode(value) for key, value in secret.get("data", {}).items()}
        secrets[name].update({key: value.encode() for key, value in secret.get("stringData", {}).items()})
    return secrets


def admin_token(secrets: dict[str, dict[str, bytes]]) -> str:
    (tokens,) = [s["tokens"].decode() for s in secrets.values() if "tokens" in s]
    return next(line.split()[2] for line in tokens.splitlines() if not line.startswith("#") and line.split()[1] == "admin")


def xquad_documents(data: Path) -> list[dict]:
    """The first passages that have a held-out question."""
    held_out = held_out_questions(data)
    corpus = [json.loads(line) for line in (data / "corpus.jsonl").read_text().splitlines()]
    return [doc for doc in corpus if doc["_id"] in held_out][:DOCUMENTS]


def test_two_embedder_replicas_on_embedded_qdrant_are_refused(helm, tmp_path):
    two = tmp_path / "two-embedders.yaml"
    two.write_text("services:\n  embedder:\n    replicaCount: 2\n")
    refused = helm_template(helm, [PROOF_VALUES, two])
    assert refused.returncode != 0 and "embedded Qdrant" in refused.stderr


def test_the_rendered_chart_runs_a_job_on_separate_hosts_and_survives_losing_the_trainer_host(helm, shared_data):
    docs = render(helm, [PROOF_VALUES])
    services = {f"{RELEASE}-embedforge-{s}": s for s in SERVICES}
    network = Network(["kafka", "s3", "llm", *SERVICES], names={"kafka": "kafka", "s3": "s3", "llm": "llm", **services})
    base = Path(tempfile.mkdtemp(prefix="efproof-", dir="/tmp"))
    base.chmod(0o711)  # hosts can reach their own folders inside, never list or read the others'
    logs = base / "logs"
    logs.mkdir()
    venv_bin = host_venv(base)  # the image's /opt/venv
    data = shared_data / "xquad-en"
    documents = xquad_documents(data)
    with network:
        hosts = network.hosts
        kafka, s3, llm = hosts["kafka"], hosts["s3"], hosts["llm"]
        plain = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
        kafka_url = f"tcp://{kafka.address}:9092"
        kafka.start(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                "tcp://0.0.0.0:9092",
                "--advertised-listener-url",
                kafka_url,
                "--storage-engine",
                "memory://tansu/",
            ],
            plain,
            logs / "kafka.log",
            base,
        )
        s3.start(
            [str(venv_bin / "python"), "-m", "moto.server", "-H", "0.0.0.0", "-p", "5000"],
            {**plain, "HOME": str(s3.private_dir(base, "home"))},
            logs / "s3.log",
            base,
        )
        llm.start(
            [str(venv_bin / "python"), "-m", "tests.deploy.recorded_llm", "--data", str(data), "--port", "8000"],
            {**plain, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
            logs / "llm.log",
            REPO,
        )
        for host, port in ((kafka, 9092), (s3, 5000), (llm, 8000)):
            wait_for_tcp(host.address, port, timeout_s=60)

        # What the chart's topic Job and the platform's bucket provisioning do before the services start.
        kafka_settings = KafkaSettings(bootstrap_servers=f"{kafka.address}:9092", topic_prefix="proof.")
        create_topics_as_the_topic_job_would(docs, kafka_settings)
        s3_client = boto3.client(
            "s3",
            endpoint_url=f"http://{s3.address}:5000",
            aws_access_key_id="proof-access-key",
            aws_secret_access_key="proof-secret-key",
            region_name="us-east-1",
        )
        s3_client.create_bucket(Bucket=BUCKET)

        secrets = cluster_secrets(docs)
        client_ca = base / "client-ca.crt"
        client_ca.write_bytes(next(secret["ca.crt"] for secret in secrets.values() if "ca.crt" in secret))
        tls_of = {
            service: TlsSettings(
                enabled=True, ca_file=str(client_ca), cert_file="", key_file="", server_name=f"{RELEASE}-embedforge-{service}"
            )
            for service in SERVICES
        }
        token = admin_token(secrets)

        def start_service(service: str) -> Path:
            host = hosts[service]
            state_dir = host.private_dir(base, f"state-{time.monotonic_ns()}")
            deployment = objects(docs, "Deployment")[f"{RELEASE}-embedforge-{service}"]
            mounts = mount_secret_volumes(deployment, secrets, host.private_dir(base, f"secrets-{time.monotonic_ns()}"), host.uid)
            environment = service_environment(
                docs, service, venv_bin, state_dir, host.private_dir(base, f"tmp-{time.monotonic_ns()}"), mounts
            )
            host.start(image.entrypoint(service), environment, logs / f"{service}.log", REPO)
            return state_dir

        for service in SERVICES:
            start_service(service)

        # Clients reach each API over TLS (verified against the Service name) with a bearer token.
        def channel(service: str) -> grpc.Channel:
            return traced_channel(f"{hosts[service].address}:{GRPC_PORT}", tls_of[service], token)

        def wait_until_ready(service: str) -> None:
            wait_until_serving(f"{hosts[service].address}:{GRPC_PORT}", timeout_s=300, tls=tls_of[service], token=token)

        for service in SERVICES:
            wait_until_ready(service)
        unauthenticated = embedder_pb2_grpc.EmbedderServiceStub(
            traced_channel(f"{hosts['embedder'].address}:{GRPC_PORT}", tls_of["embedder"])
        )
        with pytest.raises(grpc.RpcError) as refused:
            unauthenticated.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        taskgen = taskgen_pb2_grpc.TaskgenServiceStub(channel("taskgen"))
        examplegen = examplegen_pb2_grpc.ExamplegenServiceStub(channel("examplegen"))
        curator = curator_pb2_grpc.CuratorServiceStub(channel("curator"))
        trainer = trainer_pb2_grpc.TrainerServiceStub(channel("trainer"))
        embedder = embedder_pb2_grpc.EmbedderServiceStub(channel("embedder"))

        # A corpus-only job: the documents go to forge.documents, examplegen writes one query per passage.
        spec = pb.JobSpec(
            name="cluster-proof",
            domain="Wikipedia articles on sports, science and history, searched with reading-comprehension questions.",
            languages=[pb.LanguageWeight(language="en", weight=1.0)],
            corpus_queries=DOCUMENTS,
            collection="xquad",
            training=pb.TrainingSpec(batch_size=4, max_steps=30, epochs=20, hard_negatives_per_query=1, max_length=128),
        )
        job = taskgen.SubmitJob(taskgen_pb2.SubmitJobRequest(spec=spec)).job
        producer = ProtoProducer(kafka_settings, client_id="cluster-proof")
        for doc in documents:
            producer.send(
                topics.DOCUMENTS,
                doc["_id"],
                pb.Document(doc_id=doc["_id"], collection="xquad", title=doc["title"], text=doc["text"], job_id=job.job_id),
            )
        producer.flush()
        producer.close()

        deadline = time.monotonic() + 600
        while True:
            status = taskgen.GetJob(taskgen_pb2.GetJobRequest(job_id=job.job_id)).job
            generation = examplegen.GetGenerationStats(examplegen_pb2.GetGenerationStatsRequest(job_id=job.job_id))
            dataset = curator.GetDatasetStats(curator_pb2.GetDatasetStatsRequest(job_id=job.job_id))
            generated = generation.succeeded + generation.failed
            if (
                status.examples_target
                and generated >= status.examples_target
                and dataset.accepted + dataset.rejected >= generated
            ):
                break
            assert time.monotonic() < deadline, f"generation stalled: {status}, {generation}, {dataset}"
            time.sleep(1)
        assert generation.succeeded == DOCUMENTS and dataset.accepted >= DOCUMENTS // 2, (generation, dataset)

        probe = EmbedProbe(channel("embedder"))
        probe.start()
        run = start_run(
            trainer,
            trainer_pb2.StartRunRequest(
                job_id=job.job_id, spec=spec.training, run_id=f"{job.job_id}-proof", min_examples=dataset.accepted
            ),
            timeout_s=120,
        )
        deadline = time.monotonic() + 600
        while run.step < CHECKPOINT_EVERY + 2:
            assert run.state in (trainer_pb2.RUN_STATE_QUEUED, trainer_pb2.RUN_STATE_MINING, trainer_pb2.RUN_STATE_TRAINING), run
            assert time.monotonic() < deadline, f"no checkpoint reached: {run}"
            time.sleep(0.2)
            run = trainer.GetRun(trainer_pb2.GetRunRequest(run_id=run.run_id)).run
        steps_before_kill = run.step

        hosts["trainer"].kill()
        new_state_dir = start_service("trainer")  # a fresh pod on an empty node: new state dir, same storage
        wait_until_ready("trainer")
        final = run
        for update in trainer.WatchRun(trainer_pb2.WatchRunRequest(run_id=run.run_id), timeout=900):
            final = update.run
        assert final.state == trainer_pb2.RUN_STATE_SUCCEEDED, final
        assert final.step == 30
        events = [
            json.loads(line)
            for line in (new_state_dir / "trainer" / "runs" / run.run_id / "events.jsonl").read_text().splitlines()
        ]
        resumed_from = next(event["resumed_from"] for event in events if "resumed_from" in event)
        assert 0 < resumed_from <= steps_before_kill and steps_before_kill - resumed_from <= CHECKPOINT_EVERY, (
            resumed_from,
            steps_before_kill,
        )

        deadline = time.monotonic() + 300
        while True:
            info = embedder.GetModelInfo(embedder_pb2.GetModelInfoRequest(collection="xquad"))
            if info.model_id == final.model_id and info.documents >= DOCUMENTS:
                break
            assert time.monotonic() < deadline, f"embedder never served {final.model_id} over every document: {info}"
            time.sleep(1)
        probe.stopped.set()
        probe.join()
        assert probe.calls > 50 and probe.failures == [], probe.failures

        held_out = held_out_questions(data)
        found = 0
        for doc in documents:
            hits = embedder.Search(embedder_pb2.SearchRequest(query=held_out[doc["_id"]], collection="xquad", top_k=3)).hits
            found += doc["_id"] in {hit.doc_id for hit in hits}
        assert found >= 0.8 * len(documents), f"{found}/{len(documents)} held-out questions found their passage in the top 3"

        # Nothing a host wrote is readable by another host's user; the model travelled through S3.
        assert {p.stat().st_uid for p in base.glob("trainer-state-*")} == {hosts["trainer"].uid}
        assert all(p.stat().st_mode & 0o077 == 0 for p in base.iterdir() if p.name not in ("logs", "venv", "client-ca.crt"))
        assert any(
            o["Key"].endswith("manifest.json")
            for o in s3_client.list_objects_v2(Bucket=BUCKET, Prefix="embedforge/models/").get("Contents", [])
        )
    shutil.rmtree(base)  # kept for its logs when the test fails
