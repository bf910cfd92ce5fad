"""The training stage as a process: resume after SIGKILL, and torchrun (gloo) DDP vs one process."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from libs.modeling.export import load_trained
from services.trainer import cli

PROBES = ["where is the volcano number 3", "The river number 7 lies north of town 21.", "an unrelated sentence"]
ENV = {**os.environ, "PYTHONPATH": "." + os.pathsep + "gen", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def train_args(data: str, model: str, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        data,
        "--model",
        model,
        "--out",
        str(out),
        "--bf16",
        "off",
        "--lr",
        "1e-3",
        "--batch-size",
        "8",
        "--events",
        str(out / "events.jsonl"),
        *extra,
    ]


def run_cli(args: list[str], in_process: bool = False) -> None:
    out = Path(args[args.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    if in_process:  # the same entry point, without paying for a fresh interpreter
        cli.main(args)
    else:
        subprocess.run(
            [sys.executable, "-m", "services.trainer.cli", *args], check=True, env=ENV, capture_output=True, timeout=300
        )


def events(out: Path) -> list[dict]:
    path = out / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_training_killed_with_sigkill_resumes_and_ends_like_an_uninterrupted_run(tmp_path, tiny_bert, dataset_file):
    extra = ("--epochs", "4", "--checkpoint-every", "3")
    run_cli(train_args(dataset_file, tiny_bert, tmp_path / "straight", *extra), in_process=True)

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.trainer.cli", *train_args(dataset_file, tiny_bert, interrupted, *extra)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (interrupted / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()
    process.wait()
    assert (interrupted / "checkpoint.pt").exists() and not (interrupted / "trained").exists(), "the kill must land mid-run"
    run_cli(train_args(dataset_file, tiny_bert, interrupted, *extra))

    summary = [e for e in events(interrupted) if "resumed_from" in e][-1]
    assert 0 < summary["resumed_from"] < summary["steps"] == 24
    expected = load_trained(tmp_path / "straight" / "trained").encode(PROBES)
    assert torch.allclose(load_trained(interrupted / "trained").encode(PROBES), expected, atol=1e-4)
    final_losses = [e["loss"] for e in events(tmp_path / "straight") if "loss" in e][-5:]
    resumed_losses = [e["loss"] for e in events(interrupted) if "loss" in e][-5:]
    assert resumed_losses == pytest.approx(final_losses, abs=1e-4)


def test_two_process_gloo_ddp_matches_one_process_with_the_same_global_batch(tmp_path, tiny_bert, dataset_file):
    extra = ("--epochs", "2", "--no-bucket-by-length")
    run_cli(train_args(dataset_file, tiny_bert, tmp_path / "single", *extra), in_process=True)
    distributed = tmp_path / "ddp"
    distributed.mkdir()
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "services.trainer.cli",
            *train_args(dataset_file, tiny_bert, distributed, *extra),
        ],
        check=True,
        env=ENV,
        capture_output=True,
        timeout=300,
    )
    single_losses = [e["loss"] for e in events(tmp_path / "single") if "loss" in e]
    ddp_losses = [e["loss"] for e in events(distributed) if "loss" in e]
    assert len(single_losses) == len(ddp_losses) == 12
    assert ddp_losses == pytest.approx(single_losses, abs=1e-4)
    expected = load_trained(tmp_path / "single" / "trained").encode(PROBES)
    assert torch.allclose(load_trained(distributed / "trained").encode(PROBES), expected, atol=1e-4)


def test_dataset_smaller_than_the_batch_trains_in_one_batch(tmp_path, tiny_bert):
    data = tmp_path / "small.jsonl"
    data.write_text(
        "".join(
            json.dumps({"query": f"question {i}", "pos": [f"answer number {i}"], "neg": [], "prompt": ""}) + "\n"
            for i in range(4)
        )
    )
    out = tmp_path / "small"
    run_cli(
        [
            "train",
            "--data",
            str(data),
            "--model",
            tiny_bert,
            "--out",
            str(out),
            "--bf16",
            "off",
            "--batch-size",
            "32",
            "--events",
            str(out / "events.jsonl"),
        ],
        in_process=True,
    )
    assert (out / "trained").exists()
    assert [e for e in events(out) if "loss" in e]
