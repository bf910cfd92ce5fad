"""The trainer's API as a hostile client would use it (issue 16): paths outside the data roots,
FIFOs and bad ids are refused with INVALID_ARGUMENT, with one message whether or not the path
exists, and a refused request never holds up the next one."""

import os

import grpc
import pytest

from embedforge.v1 import trainer_pb2 as api
from tests.services.trainer.test_service import spec, trainer  # noqa: F401 - the fixture


def refused(call) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call()
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    return error.value.details()


def test_server_paths_outside_the_data_roots_are_refused_without_telling_whether_they_exist(
    trainer,  # noqa: F811 - the fixture
    tiny_bert,
    dataset_file,
    tmp_path,
):
    stub, _ = trainer
    outside = tmp_path.parent / f"{tmp_path.name}-outside.jsonl"
    outside.write_text(open(dataset_file).read())
    try:
        probes = [
            "/etc/shadow",
            "/etc/passwd",
            "/nonexistent",
            str(outside),
            str(tmp_path / ".." / outside.name),
            "relative.jsonl",
            str(tmp_path / "missing.jsonl"),
        ]
        messages = {
            refused(lambda: stub.StartRun(api.StartRunRequest(dataset_path=path, spec=spec(tiny_bert), run_id="probe")))
            for path in probes
        }
        assert messages == {
            f"dataset_path is not a regular file under the data roots this service may read (at most {2 * 1024**3} "
            "bytes per file)"
        }
        eval_messages = {
            refused(
                lambda: stub.StartRun(api.StartRunRequest(dataset_path=dataset_file, eval_paths=[path], spec=spec(tiny_bert)))
            )
            for path in ("/etc", "/nonexistent")
        }
        corpus_messages = {
            refused(lambda: stub.StartRun(api.StartRunRequest(dataset_path=dataset_file, corpus_path=path, spec=spec(tiny_bert))))
            for path in ("/etc/passwd", "/nonexistent")
        }
        base_messages = {
            refused(lambda: stub.StartRun(api.StartRunRequest(dataset_path=dataset_file, spec=spec(path))))
            for path in ("/usr", "/nonexistent")
        }
    finally:
        outside.unlink()
    assert len(eval_messages) == len(corpus_messages) == len(base_messages) == 1
    assert eval_messages.pop().startswith("eval_paths[0] is not a regular file or folder under the data roots")
    assert corpus_messages.pop().startswith("corpus_path is not a regular file or folder under the data roots")
    assert base_messages.pop().startswith("spec.base_model is not a regular file or folder under the data roots")
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetRun(api.GetRunRequest(run_id="probe"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # nothing was registered


def test_a_fifo_as_dataset_is_refused_at_once_and_the_next_run_starts(trainer, tiny_bert, dataset_file, tmp_path):  # noqa: F811
    stub, _ = trainer
    os.mkfifo(tmp_path / "fifo.jsonl")
    message = refused(
        lambda: stub.StartRun(api.StartRunRequest(dataset_path=str(tmp_path / "fifo.jsonl"), spec=spec(tiny_bert)), timeout=10)
    )
    assert message.startswith("dataset_path is not a regular file")
    run = stub.StartRun(
        api.StartRunRequest(dataset_path=dataset_file, spec=spec(tiny_bert, max_steps=1), run_id="after-fifo"), timeout=30
    ).run
    assert run.run_id == "after-fifo"
    stub.CancelRun(api.CancelRunRequest(run_id="after-fifo"))


@pytest.mark.parametrize("run_id", ["../escape", "/tmp/abs", "a" * 300, "nul\x00id", ".hidden", "a/b"])
def test_run_ids_outside_the_id_format_are_refused_on_every_run_rpc(trainer, tiny_bert, dataset_file, run_id):  # noqa: F811
    stub, _ = trainer
    assert refused(
        lambda: stub.StartRun(api.StartRunRequest(dataset_path=dataset_file, spec=spec(tiny_bert), run_id=run_id))
    ).startswith("run_id ")
    assert refused(lambda: stub.GetRun(api.GetRunRequest(run_id=run_id))).startswith("run_id ")
    assert refused(lambda: stub.CancelRun(api.CancelRunRequest(run_id=run_id))).startswith("run_id ")
    assert refused(lambda: next(iter(stub.WatchRun(api.WatchRunRequest(run_id=run_id))))).startswith("run_id ")


def test_list_models_refuses_bad_page_sizes_and_job_ids(trainer):  # noqa: F811
    stub, _ = trainer
    assert "page_size must be between 0" in refused(lambda: stub.ListModels(api.ListModelsRequest(page_size=-1)))
    assert "job_id is not a valid id" in refused(lambda: stub.ListModels(api.ListModelsRequest(job_id="../x")))
    assert list(stub.ListModels(api.ListModelsRequest(page_size=5)).models) == []
