"""The end-of-run report: Markdown and JSON files plus a PNG loss curve."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _table(headers: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _counts(title: str, counts: dict) -> list[str]:
    if not counts:
        return []
    return [f"**{title}**", "", *_table(["", "count"], sorted(([k, v] for k, v in counts.items()), key=lambda r: -r[1])), ""]


def render_markdown(report: dict) -> str:
    job, gen, cur, train = report["job"], report["generation"], report["curation"], report["training"]
    lines = [
        f"# EmbedForge run report: {job.get('name') or job['job_id']}",
        "",
        f"Domain: {job['domain']}",
        "",
        f"Task (the query instruction): {job['task']}",
        "",
        f"Job `{job['job_id']}`, finished in {report['timings']['total_s']:.0f} s.",
        "",
        "## Data",
        "",
        *_table(
            ["tasks brainstormed", "documents", "generated", "generation failures", "accepted", "rejected"],
            [[job.get("tasks", 0), job.get("documents", 0), gen["succeeded"], gen["failed"], cur["accepted"], cur["rejected"]]],
        ),
        "",
        *_counts("Rejected by reason", cur.get("rejected_by_reason", {})),
        *_counts("Generation failures by reason", gen.get("failures_by_reason", {})),
        *_counts("Accepted by language", cur.get("accepted_by_language", {})),
        *_counts("Accepted by category", cur.get("accepted_by_category", {})),
        "## LLM usage",
        "",
        *_table(
            ["stage", "model", "calls", "prompt tokens", "completion tokens", "cost (USD)"],
            [
                [
                    u["stage"],
                    u["model"],
                    u.get("calls", 0),
                    u.get("prompt_tokens", 0),
                    u.get("completion_tokens", 0),
                    f"{u.get('cost_usd', 0):.4f}",
                ]
                for u in report["usage"]
            ],
        ),
        "",
        "## Training",
        "",
        f"Run `{train['run_id']}`: {train['steps']} steps on {train['train_examples']} examples "
        f"({train['dev_examples']} held out for dev).",
        f"Loss {train['loss_curve'][0][1]:.4f} -> {train['loss_curve'][-1][1]:.4f}. Curve: `{report['files']['loss_curve']}`."
        if train["loss_curve"]
        else "No loss recorded.",
        "",
        "## Evaluation (base vs tuned, same data, same run)",
        "",
        *_table(
            ["dataset", "metric", "base", "tuned", "delta ± standard error"],
            [
                [
                    e["dataset"],
                    e["metric"],
                    f"{e['base']:.4f}",
                    f"{e['tuned']:.4f}",
                    f"{e['tuned'] - e['base']:+.4f} ± {e['difference_se']:.4f}",
                ]
                for e in report["evaluation"]
            ],
        ),
        "",
        "## Model and index",
        "",
        f"Model `{report['model']['model_id']}` at `{report['model']['uri']}`.",
        f"Qdrant collection `{report['index']['collection']}`: {report['index']['points']} points.",
        "",
    ]
    search = report.get("sample_search")
    if search:
        lines += [f'## Sample hybrid search: "{search["query"]}"', ""]
        lines += _table(
            ["rank", "score", "document", "text"],
            [
                [i + 1, f"{h['score']:.4f}", h["doc_id"], h["text"][:120].replace("\n", " ").replace("|", "/")]
                for i, h in enumerate(search["hits"])
            ],
        )
        lines.append("")
    return "\n".join(lines)


def plot_loss(loss_curve: list[list[float]], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 3.5))
    if loss_curve:
        steps, losses = zip(*loss_curve)
        axis.plot(steps, losses, marker="." if len(steps) < 60 else None)
    axis.set_xlabel("step")
    axis.set_ylabel("InfoNCE loss")
    axis.set_title("Training loss")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md and loss.png into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "loss_curve": out_dir / "loss.png"}
    report = {**report, "files": {k: str(v) for k, v in paths.items()}}
    plot_loss(report["training"]["loss_curve"], paths["loss_curve"])
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    paths["markdown"].write_text(render_markdown(report))
    return paths
