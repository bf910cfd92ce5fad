"""A small corpus (many questions per passage, hard negatives that are other questions' positives)
trains: batches form, copies of a positive are masked, also across two gloo ranks."""

import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from libs.modeling.data import TrainExample, text_key
from libs.modeling.embedder import Embedder, ModelConfig
from libs.modeling.trainer import TrainConfig, Trainer, collate, contrastive_loss

DOCUMENTS = [f"Document {d} describes the lake number {d} and its {d * 4} islands." for d in range(3)]


def shared_examples() -> list[TrainExample]:
    return [
        TrainExample(f"question {i} about lake {i % 3}", DOCUMENTS[i % 3], tuple(DOCUMENTS[j] for j in range(3) if j != i % 3))
        for i in range(6)
    ]


def test_collate_keys_each_document_by_its_exact_text():
    examples = shared_examples()
    config = TrainConfig(output_dir="unused", negatives_per_query=1)
    batch = collate(examples, [0, 3, 1], config, epoch=0)
    assert batch.document_keys == [text_key(d) for d in batch.documents]
    assert batch.keys.dtype == torch.long and bool((batch.keys >= 0).all())
    positive_keys = batch.keys[batch.positive_index]
    assert positive_keys[0] == positive_keys[1] != positive_keys[2]  # examples 0 and 3 share document 0
    assert text_key(DOCUMENTS[0]) == text_key(DOCUMENTS[0]) != text_key(DOCUMENTS[0] + " ")


def test_six_examples_about_three_documents_train_with_batch_size_four(tiny_models, tmp_path):
    torch.manual_seed(0)
    embedder = Embedder(ModelConfig(tiny_models["bert"], bf16=False))
    config = TrainConfig(output_dir=str(tmp_path), batch_size=4, epochs=2, checkpoint_every=0, learning_rate=1e-3)
    trainer = Trainer(embedder, shared_examples(), config)
    result = trainer.train()
    assert result.steps == trainer.total_steps == 4
    assert all(math.isfinite(loss) for _, loss in result.losses)


WORKER = """
import json, sys, torch, torch.distributed as dist
from libs.modeling.trainer import TrainConfig, contrastive_loss
rank, init, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + init, rank=rank, world_size=2)
case = torch.load(out + "/case.pt")
q = case["q"][rank].clone().requires_grad_()
d = case["d"][rank].clone().requires_grad_()
config = TrainConfig(output_dir="unused", temperature=0.05, matryoshka_dims=(4,))
loss = contrastive_loss(q, d, torch.arange(q.shape[0]), config, case["keys"][rank])
loss.backward()
torch.save({"loss": loss.detach(), "q": q.grad, "d": d.grad}, f"{out}/rank{rank}.pt")
dist.destroy_process_group()
"""


def test_two_gloo_ranks_mask_copies_across_ranks_like_one_process(tmp_path):
    # Rank 0: positives A, B, negative C. Rank 1: positives A (a copy on the other rank), C, negative B.
    texts = [["A", "B", "C"], ["A", "C", "B"]]
    torch.manual_seed(0)
    case = {
        "q": [torch.randn(2, 8), torch.randn(2, 8)],
        "d": [torch.randn(3, 8), torch.randn(3, 8)],
        "keys": [torch.tensor([text_key(t) for t in rank_texts]) for rank_texts in texts],
    }
    torch.save(case, tmp_path / "case.pt")
    path = os.pathsep.join([".", "gen", os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    root = Path(__file__).resolve().parents[3]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(rank), str(tmp_path / "init"), str(tmp_path)],
            cwd=root,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    q = torch.cat(case["q"]).requires_grad_()
    d = torch.cat(case["d"]).requires_grad_()
    keys = torch.cat(case["keys"])
    config = TrainConfig(output_dir="unused", temperature=0.05, matryoshka_dims=(4,))
    loss = contrastive_loss(q, d, torch.tensor([0, 1, 3, 4]), config, keys)
    loss.backward()
    assert not torch.isclose(loss, contrastive_loss(q, d, torch.tensor([0, 1, 3, 4]), config))  # the mask is active
    for r in ranks:
        assert torch.isclose(r["loss"], loss.detach(), rtol=1e-5)
    assert torch.allclose(torch.cat([r["q"] for r in ranks]), q.grad, atol=1e-6)
    assert torch.allclose(torch.cat([r["d"] for r in ranks]), d.grad, atol=1e-6)
