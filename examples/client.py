"""A gRPC client for a running EmbedForge (`make run CONTINUOUS=1`, or the services in a cluster).

    # submit a job (its corpus_path documents are uploaded) and follow it until its model is trained
    PYTHONPATH=.:gen .venv/bin/python examples/client.py submit examples/demo/job.yaml --watch
    # jobs and their progress
    PYTHONPATH=.:gen .venv/bin/python examples/client.py jobs
    # hybrid search in a collection with the model the embedder serves
    PYTHONPATH=.:gen .venv/bin/python examples/client.py search "the ring is red" --collection helios-support

Addresses come from `.run/endpoints.json` (written by `make run`) unless given with
--taskgen / --embedder (host:port, e.g. a port-forwarded Service in Kubernetes). Calls go over
TLS trusting --ca-file and carry the bearer token in --token-file: by default the local CA and
admin token that `make run` writes to `.run/auth/`; in a cluster, the chart's CA and a token
from its tokens Secret (charts/embedforge/README.md), with --server-name when port-forwarding.

A path on this machine means nothing to the services: the documents a job's corpus_path names
here are read here and uploaded (UploadDocuments), and the job takes them from forge.documents.
eval_paths and training.base_model stay server paths, accepted only under the services' data roots.
"""

import argparse
import json
from pathlib import Path

import grpc

from embedforge.v1 import embedder_pb2, embedder_pb2_grpc, taskgen_pb2, taskgen_pb2_grpc
from libs.grpc import traced_channel
from libs.jobspec import load_job_spec
from libs.settings import TlsSettings
from libs.uploads import upload_requests

ENDPOINTS = Path(".run") / "endpoints.json"
LOCAL_AUTH = Path(".run") / "auth"


def address(args: argparse.Namespace, service: str) -> str:
    given = getattr(args, service)
    if given:
        return given
    if not Path(args.endpoints).is_file():
        raise SystemExit(f"no --{service} address and no {args.endpoints}: start `make run CONTINUOUS=1` first")
    return json.loads(Path(args.endpoints).read_text())[service]


def channel(args: argparse.Namespace, service: str) -> grpc.Channel:
    if args.plaintext:
        return traced_channel(address(args, service))
    for path in (args.ca_file, args.token_file):
        if not Path(path).is_file():
            raise SystemExit(f"{path} not found: start `make run CONTINUOUS=1` first, or give --ca-file and --token-file")
    tls = TlsSettings(enabled=True, ca_file=args.ca_file, cert_file="", key_file="", server_name=args.server_name)
    return traced_channel(address(args, service), tls, Path(args.token_file).read_text().strip())


def describe(job: taskgen_pb2.JobStatus) -> str:
    state = taskgen_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    line = (
        f"{job.job_id} {job.spec.name or '-'} {state}: tasks {job.tasks_published}/{job.tasks_target}, "
        f"examples generated {job.examples_generated}/{job.examples_target}, "
        f"accepted {job.examples_accepted}, rejected {job.examples_rejected}"
    )
    return line + (f", model {job.model_id}" if job.model_id else "") + (f", error: {job.error}" if job.error else "")


def submit(args: argparse.Namespace) -> None:
    taskgen = taskgen_pb2_grpc.TaskgenServiceStub(channel(args, "taskgen"))
    spec = load_job_spec(args.job)
    documents = spec.corpus_path
    spec.ClearField("corpus_path")
    job = taskgen.SubmitJob(taskgen_pb2.SubmitJobRequest(spec=spec, job_id=args.job_id)).job
    print(describe(job))
    if documents:
        print(
            f"uploaded {taskgen.UploadDocuments(upload_requests(documents, job.job_id, spec.collection)).documents} "
            f"documents from {documents}"
        )
    if args.watch:  # a server stream: one status per change, until SUCCEEDED or FAILED
        for update in taskgen.WatchJob(taskgen_pb2.WatchJobRequest(job_id=job.job_id)):
            print(describe(update.job))


def jobs(args: argparse.Namespace) -> None:
    taskgen = taskgen_pb2_grpc.TaskgenServiceStub(channel(args, "taskgen"))
    page = taskgen.ListJobs(taskgen_pb2.ListJobsRequest(page_size=args.limit, page_token=args.page_token))
    for job in page.jobs:
        print(describe(job))
    if page.next_page_token:
        print(f"(more: --page-token {page.next_page_token})")


def search(args: argparse.Namespace) -> None:
    embedder = embedder_pb2_grpc.EmbedderServiceStub(channel(args, "embedder"))
    mode = embedder_pb2.SEARCH_MODE_HYBRID if args.mode == "hybrid" else embedder_pb2.SEARCH_MODE_DENSE
    response = embedder.Search(
        embedder_pb2.SearchRequest(query=args.query, collection=args.collection, top_k=args.top_k, mode=mode)
    )
    for rank, hit in enumerate(response.hits, start=1):
        print(f"{rank}. {hit.score:.4f} {hit.doc_id}: {' '.join(hit.text.split())[:100]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", default=str(ENDPOINTS), help="service addresses written by make run")
    parser.add_argument("--taskgen", default="", help="taskgen host:port")
    parser.add_argument("--embedder", default="", help="embedder host:port")
    parser.add_argument("--ca-file", default=str(LOCAL_AUTH / "ca.crt"), help="CA that signed the services' certificates")
    parser.add_argument("--token-file", default=str(LOCAL_AUTH / "admin.token"), help="file holding the bearer token")
    parser.add_argument(
        "--server-name", default="", help="name in the server certificate, if not the address's host (port-forwarding)"
    )
    parser.add_argument("--plaintext", action="store_true", help="no TLS and no token (a deployment with both turned off)")
    commands = parser.add_subparsers(dest="command", required=True)
    submit_parser = commands.add_parser("submit", help="submit a job spec YAML")
    submit_parser.add_argument("job")
    submit_parser.add_argument("--job-id", default="", help="idempotency key: the same id twice returns the first job")
    submit_parser.add_argument("--watch", action="store_true", help="follow the job until it succeeds or fails")
    submit_parser.set_defaults(handler=submit)
    jobs_parser = commands.add_parser("jobs", help="list jobs")
    jobs_parser.add_argument("--limit", type=int, default=20, help="jobs per page (at most 100)")
    jobs_parser.add_argument("--page-token", default="", help="next page, as the previous page printed")
    jobs_parser.set_defaults(handler=jobs)
    search_parser = commands.add_parser("search", help="search a collection")
    search_parser.add_argument("query")
    search_parser.add_argument("--collection", default="")
    search_parser.add_argument("--top-k", type=int, default=5)
    search_parser.add_argument("--mode", choices=("hybrid", "dense"), default="hybrid")
    search_parser.set_defaults(handler=search)
    args = parser.parse_args()
    try:
        args.handler(args)
    except grpc.RpcError as error:
        raise SystemExit(f"{error.code().name}: {error.details()}") from None


if __name__ == "__main__":
    main()
