"""The trainer reads a dataset, eval sets and a corpus named by object URIs under its URI data
root (issue 16), downloaded into its state dir (libs.fetch); anything else is refused alike.
moto's S3 server on loopback (the s3_server fixture), the real broker and gRPC server."""

from pathlib import Path

import boto3
import grpc
import pytest

from embedforge.v1 import trainer_pb2 as api
from tests.services.trainer.test_service import spec, trainer  # noqa: F401 - the fixture

REFUSED = "is not a regular file{} under the data roots this service may read"


@pytest.fixture
def bucket(s3_server) -> str:
    return s3_server.bucket()


@pytest.fixture
def more_data_roots(bucket) -> list[str]:
    return [f"{bucket}/datasets"]


@pytest.fixture
def uploaded(bucket, dataset_file, beir_folder) -> str:
    """The dataset file and the BEIR folder under s3://<bucket>/datasets/, and a copy beside it."""
    s3, name = boto3.client("s3"), bucket.removeprefix("s3://")
    s3.upload_file(dataset_file, name, "datasets/train.jsonl")
    s3.upload_file(dataset_file, name, "elsewhere/train.jsonl")
    for file in Path(beir_folder).rglob("*"):
        if file.is_file():
            s3.upload_file(str(file), name, f"datasets/beir/{file.relative_to(beir_folder).as_posix()}")
    return bucket


def test_a_run_trains_and_evaluates_on_data_named_by_uris_under_the_root(trainer, tiny_bert, uploaded, tmp_path):  # noqa: F811
    stub, _ = trainer
    request = api.StartRunRequest(
        dataset_path=f"{uploaded}/datasets/train.jsonl",
        eval_paths=[f"{uploaded}/datasets/beir/"],
        corpus_path=f"{uploaded}/datasets/beir",
        spec=spec(tiny_bert, max_steps=2),
    )
    run = stub.StartRun(request).run
    final = [update.run for update in stub.WatchRun(api.WatchRunRequest(run_id=run.run_id), timeout=300)][-1]
    assert final.state == api.RUN_STATE_SUCCEEDED, final.error
    assert "beir" in {e.dataset for e in final.evals}  # the eval set keeps its name
    fetched = tmp_path / "state" / "trainer" / "fetched"
    assert sorted(p.name for p in fetched.rglob("*") if p.is_file()) == [
        "corpus.jsonl",
        "corpus.jsonl",
        "queries.jsonl",
        "test.tsv",
        "train.jsonl",
    ]


def test_uris_outside_the_root_are_refused_alike_and_nothing_is_registered(trainer, tiny_bert, uploaded, dataset_file, tmp_path):  # noqa: F811
    stub, _ = trainer

    def refused(**fields) -> str:
        with pytest.raises(grpc.RpcError) as error:
            stub.StartRun(api.StartRunRequest(spec=spec(tiny_bert), run_id="probe", **{"dataset_path": dataset_file, **fields}))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
        return error.value.details()

    for uri in (
        f"{uploaded}/elsewhere/train.jsonl",
        f"{uploaded}/datasets/../elsewhere/train.jsonl",
        f"{uploaded}/datasets2/train.jsonl",
        f"{uploaded}/datasets/missing.jsonl",
        "s3://key:secret@" + uploaded.removeprefix("s3://") + "/datasets/train.jsonl",
        f"gs://{uploaded.removeprefix('s3://')}/datasets/train.jsonl",
    ):
        assert REFUSED.format("") in refused(dataset_path=uri)
        assert REFUSED.format(" or folder") in refused(eval_paths=[uri])
        assert REFUSED.format(" or folder") in refused(corpus_path=uri)
    assert REFUSED.format("") in refused(dataset_path=f"{uploaded}/datasets/beir/")  # a prefix where a file is asked for
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetRun(api.GetRunRequest(run_id="probe"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert not [p for p in (tmp_path / "state").rglob("*") if p.is_file() and "fetched" in p.parts]
