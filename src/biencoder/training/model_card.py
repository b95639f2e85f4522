"""README.md for a trained model, in the layout of the card this system implements.

Sections (as ``shared/spec/model-card.md``): YAML front matter (tags with dataset_size and the
loss, base_model, a widget from training samples, pipeline_tag, library_name), the title and
summary, Model Details (description, sources, full architecture), Usage, Training Details
(datasets with token statistics over their first 1,000 samples and a samples table, the loss and
its parameters, non-default and all hyperparameters, the training logs), Evaluation, Framework
Versions and Citation. The writer is ours; only the layout follows the reference.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from biencoder.training.card_text import CITATIONS, PLACEHOLDERS

SIMILARITY_NAMES = {"cosine": "Cosine Similarity", "dot": "Dot Product"}
ST_DOCS = "https://sbert.net/docs/package_reference/sentence_transformer/losses.html"

# transformers' TrainingArguments defaults for the names the card lists, to tell which are non-default.
HF_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "learning_rate": 5e-05,
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-08,
    "max_grad_norm": 1,
    "num_train_epochs": 3,
    "max_steps": -1,
    "lr_scheduler_type": "linear",
    "warmup_ratio": 0.0,
    "warmup_steps": 0,
    "seed": 42,
    "bf16": False,
    "logging_steps": 500,
    "eval_strategy": "no",
    "eval_steps": None,
    "save_steps": 500,
    "save_total_limit": None,
    "gradient_accumulation_steps": 1,
    "optim": "adamw_torch",
    "batch_sampler": "batch_sampler",
    "multi_dataset_batch_sampler": "proportional",
    "load_best_model_at_end": False,
    "metric_for_best_model": None,
}


@dataclass(frozen=True)
class DatasetCard:
    name: str
    size: int
    columns: tuple[str, ...]
    token_stats: list[tuple[int, float, int]]  # per column: min, mean, max tokens (first 1,000 rows)
    samples: list[tuple[str, ...]]  # the first rows
    loss_name: str | None = None  # this dataset's loss; None: the card's loss_name
    loss_params: dict[str, Any] | None = None


@dataclass(frozen=True)
class EvaluatorCard:
    name: str
    kind: str  # the evaluator's class name
    primary_metric: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class CardInputs:
    base_model: str
    max_seq_length: int
    dimension: int
    similarity: str
    architecture: str
    datasets: list[DatasetCard]
    loss_name: str
    loss_params: dict[str, Any]
    hyperparameters: dict[str, Any]  # transformers' names -> values
    log_rows: list[dict[str, float]]  # epoch, step, loss and/or eval columns
    widget: list[dict[str, Any]]
    versions: dict[str, str]
    evaluators: list[EvaluatorCard] = field(default_factory=list)
    plot_file: str | None = None
    best_step: int | None = None  # keep_best: the step whose weights were saved (its log row in bold)


def token_stats(lengths: np.ndarray) -> tuple[int, float, int]:
    head = lengths[:1000]
    return int(head.min()), float(head.mean()), int(head.max())


def _yaml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def loss_names(c: CardInputs) -> list[str]:
    """Each distinct loss of the run, in the datasets' order."""
    return list(dict.fromkeys([d.loss_name or c.loss_name for d in c.datasets] or [c.loss_name]))


def front_matter(c: CardInputs) -> str:
    size = sum(d.size for d in c.datasets)
    lines = ["---", "tags:"]
    for tag in (
        "sentence-transformers",
        "sentence-similarity",
        "feature-extraction",
        "generated_from_trainer",
        f"dataset_size:{size}",
        *(f"loss:{name}" for name in loss_names(c)),
    ):
        lines.append(f"- {tag}")
    lines.append(f"base_model: {c.base_model}")
    lines.append("widget:")
    for example in c.widget:
        lines.append(f"- source_sentence: {_yaml_str(example['source_sentence'])}")
        lines.append("  sentences:")
        lines.extend(f"  - {_yaml_str(s)}" for s in example["sentences"])
    lines += ["pipeline_tag: sentence-similarity", "library_name: sentence-transformers"]
    if c.evaluators:
        lines.append("metrics:")
        lines.extend(f"- {m}" for e in c.evaluators for m in e.metrics)
    lines.append("---")
    return "\n".join(lines)


def _code(text: str) -> str:
    return "<code>" + text.replace("|", "\\|").replace("\n", " ") + "</code>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], centered: bool = False) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    align = [":" + "-" * w + ":" if centered else ":" + "-" * (w + 1) for w in widths]  # as the reference
    out = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join(a.ljust(w + 2, "-") for a, w in zip(align, widths, strict=True)) + "|",
    ]
    out += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return out


def model_details(c: CardInputs) -> list[str]:
    local = c.base_model.startswith((".", "/", "~")) or c.base_model.count("/") != 1
    hub = c.base_model if local else f"https://huggingface.co/{c.base_model}"
    return [
        f"# SentenceTransformer based on {c.base_model}",
        "",
        "This is a [sentence-transformers](https://www.SBERT.net) model finetuned from "
        f"[{c.base_model}]({hub}). It maps sentences & paragraphs to a {c.dimension}-dimensional dense "
        "vector space and can be used for semantic textual similarity, semantic search, paraphrase mining, "
        "text classification, clustering, and more.",
        "",
        "## Model Details",
        "",
        "### Model Description",
        "- **Model Type:** Sentence Transformer",
        f"- **Base model:** [{c.base_model}]({hub})",
        f"- **Maximum Sequence Length:** {c.max_seq_length} tokens",
        f"- **Output Dimensionality:** {c.dimension} dimensions",
        f"- **Similarity Function:** {SIMILARITY_NAMES.get(c.similarity, c.similarity)}",
        f"- **Training Dataset{'s' if len(c.datasets) > 1 else ''}:** "
        + ", ".join(d.name for d in c.datasets),
        "<!-- - **Language:** Unknown -->",
        "<!-- - **License:** Unknown -->",
        "",
        "### Model Sources",
        "",
        "- **Documentation:** [Sentence Transformers Documentation](https://sbert.net)",
        "- **Repository:** [Sentence Transformers on GitHub](https://github.com/UKPLab/sentence-transformers)",
        "- **Hugging Face:** [Sentence Transformers on Hugging Face](https://huggingface.co/models?library=sentence-transformers)",
        "",
        "### Full Model Architecture",
        "",
        "```",
        c.architecture,
        "```",
        "",
    ]


def usage(c: CardInputs) -> list[str]:
    example = c.widget[-1] if c.widget else {"source_sentence": "query", "sentences": ["passage"]}
    sentences = [example["source_sentence"], *example["sentences"]]
    n = len(sentences)
    return [
        "## Usage",
        "",
        "### Direct Usage (Sentence Transformers)",
        "",
        "First install the Sentence Transformers library:",
        "",
        "```bash",
        "pip install -U sentence-transformers",
        "```",
        "",
        "Then you can load this model and run inference.",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        "# Download from the 🤗 Hub",
        'model = SentenceTransformer("sentence_transformers_model_id")',
        "# Run inference",
        "sentences = [",
        *(f"    {s!r}," for s in sentences),
        "]",
        "embeddings = model.encode(sentences)",
        "print(embeddings.shape)",
        f"# [{n}, {c.dimension}]",
        "",
        "# Get the similarity scores for the embeddings",
        "similarities = model.similarity(embeddings, embeddings)",
        "print(similarities.shape)",
        f"# [{n}, {n}]",
        "```",
        "",
        "### Direct Usage (biencoder)",
        "",
        "```python",
        "from biencoder import SentenceEncoder",
        "",
        'model = SentenceEncoder.load("path/to/this/folder")',
        "embeddings = model.encode(sentences)",
        "```",
        "",
        *_placeholder(
            "### Direct Usage (Transformers)",
            "<details><summary>Click to see the direct usage in Transformers</summary>\n\n</details>",
        ),
        *_placeholder(
            "### Downstream Usage (Sentence Transformers)",
            "You can finetune this model on your own dataset.\n\n"
            "<details><summary>Click to expand</summary>\n\n</details>",
        ),
        *_placeholder("### Out-of-Scope Use", PLACEHOLDERS["out_of_scope"]),
    ]


def _placeholder(heading: str, text: str) -> list[str]:
    """A section left for the author, commented out as in the reference card."""
    return ["<!--", heading, "", text, "-->", ""]


def _dataset_section(d: DatasetCard, c: CardInputs) -> list[str]:
    cols = d.columns
    names = (
        " and ".join(f"<code>{x}</code>" for x in cols)
        if len(cols) <= 2
        else (", ".join(f"<code>{x}</code>" for x in cols[:-1]) + f", and <code>{cols[-1]}</code>")
    )
    details = [
        f"<ul><li>min: {lo} tokens</li><li>mean: {mean:.2f} tokens</li><li>max: {hi} tokens</li></ul>"
        for lo, mean, hi in d.token_stats
    ]
    stats = _table(["", *cols], [["type", *(["string"] * len(cols))], ["details", *details]])
    samples = _table(list(cols), [[_code(t) for t in row] for row in d.samples])
    loss = d.loss_name or c.loss_name
    params = json.dumps(c.loss_params if d.loss_params is None else d.loss_params, indent=4)
    params = params.replace("\n", "\n  ")
    return [
        f"#### {d.name}",
        "",
        f"* Dataset: {d.name}",
        f"* Size: {d.size:,} training samples",
        f"* Columns: {names}",
        "* Approximate statistics based on the first 1000 samples:",
        *(f"  {line}" for line in stats),
        "* Samples:",
        *(f"  {line}" for line in samples),
        f"* Loss: [<code>{loss}</code>]({ST_DOCS}#{loss.lower()}) with these parameters:",
        "  ```json",
        f"  {params}",
        "  ```",
        "",
    ]


def _value(v: Any) -> str:
    return "" if v == "" else str(v)


def training_details(c: CardInputs) -> list[str]:
    heading = "### Training Datasets" if len(c.datasets) > 1 else "### Training Dataset"
    out = ["## Training Details", "", heading, ""]
    for d in c.datasets:
        out += _dataset_section(d, c)
    non_default = {k: v for k, v in c.hyperparameters.items() if k in HF_DEFAULTS and HF_DEFAULTS[k] != v}
    out += ["### Training Hyperparameters", "#### Non-Default Hyperparameters", ""]
    out += [f"- `{k}`: {_value(v)}" for k, v in non_default.items()]
    out += ["", "#### All Hyperparameters", "<details><summary>Click to expand</summary>", ""]
    out += [f"- `{k}`: {_value(v)}" for k, v in c.hyperparameters.items()]
    out += ["", "</details>", ""]
    out += training_logs(c)
    return out


def training_logs(c: CardInputs) -> list[str]:
    if not c.log_rows:
        return []
    # As the reference: each evaluator's primary metric only (all metrics are in the Evaluation section).
    primary = {f"{e.name}_{e.primary_metric}" for e in c.evaluators}
    keys = {k for r in c.log_rows for k in r}
    eval_cols = sorted(k for k in keys if k in primary)
    # several datasets: each one's own training loss beside the mean (its name + "_loss")
    loss_cols = [f"{d.name}_loss" for d in c.datasets if f"{d.name}_loss" in keys]
    rows = []
    for r in c.log_rows:
        loss = f"{r['loss']:g}" if "loss" in r else "-"
        row = [
            f"{r['epoch']:.4f}",
            str(int(r["step"])),
            loss,
            *(f"{r[k]:g}" if k in r else "-" for k in loss_cols),
            *(f"{r[k]:.4f}" if k in r else "-" for k in eval_cols),
        ]
        if c.best_step is not None and int(r["step"]) == c.best_step:
            row = [f"**{v}**" for v in row]
        rows.append(row)
    out = [
        "### Training Logs",
        *_table(["Epoch", "Step", "Training Loss", *loss_cols, *eval_cols], rows, centered=True),
        "",
    ]
    if c.best_step is not None:
        out += ["* The bold row denotes the saved checkpoint.", ""]
    if c.plot_file:
        out += [f"![Training loss]({c.plot_file})", ""]
    return out


def evaluation(c: CardInputs) -> list[str]:
    if not c.evaluators:
        return []
    out = ["## Evaluation", "", "### Metrics", ""]
    for e in c.evaluators:
        rows = []
        for name, value in e.metrics.items():
            key, val = name, f"{value:.4f}"
            if name == e.primary_metric:
                key, val = f"**{name}**", f"**{val}**"
            rows.append([key, val])
        out += [
            f"#### {e.name}",
            "",
            f"* Dataset: `{e.name}`",
            f"* Evaluated with <code>{e.kind}</code>",
            "",
            *_table(["Metric", "Value"], rows),
            "",
        ]
    return out


def framework_versions(c: CardInputs) -> list[str]:
    return ["### Framework Versions", *(f"- {k}: {v}" for k, v in c.versions.items()), ""]


def citations(c: CardInputs) -> list[str]:
    out = ["## Citation", "", "### BibTeX", ""]
    for name in ("Sentence Transformers", *loss_names(c)):
        if name in CITATIONS:
            out += [f"#### {name}", "```bibtex", CITATIONS[name], "```", ""]
    return out


def render_card(c: CardInputs) -> str:
    """The card, in the reference's section order (evaluation before training, as sentence-transformers)."""
    body = model_details(c) + usage(c) + evaluation(c)
    body += _placeholder("## Bias, Risks and Limitations", PLACEHOLDERS["bias"])
    body += _placeholder("### Recommendations", PLACEHOLDERS["recommendations"])
    body += training_details(c) + framework_versions(c) + citations(c)
    body += _placeholder("## Glossary", PLACEHOLDERS["glossary"])
    body += _placeholder("## Model Card Authors", PLACEHOLDERS["authors"])
    body += _placeholder("## Model Card Contact", PLACEHOLDERS["contact"])
    return front_matter(c) + "\n\n" + "\n".join(body).rstrip() + "\n"


def versions(with_datasets: bool) -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    from biencoder import __version__

    out = {
        "Python": platform.python_version(),
        "biencoder": __version__,
        "Transformers": transformers.__version__,
        "PyTorch": torch.__version__,
        "Tokenizers": tokenizers.__version__,
    }
    if with_datasets:
        import datasets

        out["Datasets"] = datasets.__version__
    return out
