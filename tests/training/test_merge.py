"""Weight merging: alpha 0 and 1 give back A and B exactly, the maths in between, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from biencoder.cli import main
from biencoder.encoder import SentenceEncoder
from biencoder.training.merge import MergeError, merge, merge_state_dicts
from tests.tiny import build_tiny_encoder


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("merge")
    return build_tiny_encoder(root / "a", seed=0), build_tiny_encoder(root / "b", seed=1)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_alpha_0_and_1_give_back_a_and_b_exactly(
    pair: tuple[Path, Path], tmp_path: Path, alpha: float
) -> None:
    a, b = pair
    merge(a, b, alpha, tmp_path / "out")
    got = load_file(tmp_path / "out" / "model.safetensors")
    expected = load_file((b if alpha == 1.0 else a) / "model.safetensors")
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)


def test_alpha_between_interpolates_and_the_result_loads_everywhere(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = pair
    result = merge(a, b, 0.3, tmp_path / "out")
    got = load_file(tmp_path / "out" / "model.safetensors")
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    for k in got:
        if got[k].is_floating_point():
            assert torch.allclose(got[k], 0.3 * wb[k] + 0.7 * wa[k], atol=1e-7), k
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Weight merging" in card and "0.3 *" in card and result.alpha == 0.3
    st = pytest.importorskip("sentence_transformers")
    texts = ["the cat and the dog", "a small red house"]
    ours = SentenceEncoder.load(tmp_path / "out", device="cpu").encode(texts)
    ref = st.SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(texts)
    assert abs(ours - ref).max() <= 1e-5


def test_different_architectures_are_refused(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = pair
    other = build_tiny_encoder(tmp_path / "no-normalize", normalize=False)
    with pytest.raises(MergeError, match="different module chains"):
        merge(a, other, 0.5, tmp_path / "out")
    with pytest.raises(MergeError, match=r"w: base \(2,\)"):
        merge_state_dicts({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 0.5)
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        merge_state_dicts({"w": torch.zeros(2)}, {"w": torch.zeros(2)}, 1.5)
    assert not (tmp_path / "out").exists()


def test_cli_alpha_auto_chooses_on_a_dev_set(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = pair
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = [
        "the cat sat on the mat",
        "a dog runs in the park",
        "fish swim in the river",
        "birds fly over trees",
    ]
    queries = ["where is the cat", "what does the dog do", "where do fish swim", "what flies over trees"]
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(docs))
    )
    (beir / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(queries))
    )
    (beir / "qrels" / "dev.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(4))
    )
    out = tmp_path / "merged"
    argv = ["-q", "merge", "--base", str(a), "--model", str(b), "--alpha", "auto", "--output", str(out)]
    assert main([*argv, "--eval-data", str(beir), "--grid", "0,0.5,1"]) == 0
    card = (out / "README.md").read_text()
    assert "alpha was chosen on a dev set by ndcg@10" in card and card.count("\n| ") >= 4
    assert main(["merge", "--base", str(a), "--model", str(b), "--alpha", "x", "--output", str(out)]) == 1
    assert main(["merge", "--base", str(a), "--model", str(b), "--alpha", "auto", "--output", str(out)]) == 1


def test_known_scores_are_not_measured_again(pair: tuple[Path, Path]) -> None:
    from biencoder.training.merge import choose_alpha

    a, b = (SentenceEncoder.load(p, device="cpu") for p in pair)
    seen: list[float] = []

    class Dev:
        name, primary_metric = "dev", "score"

        def __call__(self, encoder: SentenceEncoder) -> dict[str, float]:
            # the merged weights tell which alpha is being scored
            w = {k: v for k, v in encoder.state_dict().items() if v.is_floating_point()}
            key = next(k for k in w if not torch.equal(a.state_dict()[k], b.state_dict()[k]))
            diff = b.state_dict()[key] - a.state_dict()[key]
            alpha = float(((w[key] - a.state_dict()[key]) * diff).sum() / (diff * diff).sum())
            seen.append(round(alpha, 4))
            return {"score": 1.0 - abs(alpha - 0.5)}

    best, scores = choose_alpha(a, b, Dev(), (0.0, 0.5, 1.0), known={1.0: 0.9})
    assert seen == [0.0, 0.5]  # alpha 1 was known
    assert scores == {0.0: 0.5, 0.5: 1.0, 1.0: 0.9} and best == 0.5
    best, _ = choose_alpha(a, b, Dev(), (0.0, 0.5, 1.0), known={1.0: 1.0})
    assert best == 1.0  # ties go to the larger alpha
