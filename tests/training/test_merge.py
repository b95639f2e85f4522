"""Weight merging and model soups: alpha 0 and 1 give back A and B exactly, a soup is the mean of
its models (checked against torch on the state dicts), alpha is chosen on the mean of several dev
sets, and every bad input is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from biencoder.cli import main
from biencoder.encoder import SentenceEncoder
from biencoder.training.merge import (
    MergeError,
    Objective,
    choose_alpha,
    merge,
    merge_state_dicts,
    soup,
    soup_state_dicts,
)
from tests.tiny import build_tiny_encoder

Tensors = dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("merge")
    return build_tiny_encoder(root / "a", seed=0), build_tiny_encoder(root / "b", seed=1)


@pytest.fixture(scope="module")
def third(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("merge") / "c", seed=2)


def weights_of(folder: Path) -> Tensors:
    return load_file(folder / "model.safetensors")


def write_beir(folder: Path) -> Path:
    """Four queries, each judged relevant to one of four documents, in the dev split."""
    (folder / "qrels").mkdir(parents=True)
    docs = [
        "the cat sat on the mat",
        "a dog runs in the park",
        "fish swim in the river",
        "birds fly over trees",
    ]
    queries = ["where is the cat", "what does the dog do", "where do fish swim", "what flies over trees"]
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(docs))
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(queries))
    )
    (folder / "qrels" / "dev.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(4))
    )
    return folder


# WiSE-FT: one model and its base


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_alpha_0_and_1_give_back_a_and_b_exactly(
    pair: tuple[Path, Path], tmp_path: Path, alpha: float
) -> None:
    a, b = pair
    merge(a, b, alpha, tmp_path / "out")
    got = weights_of(tmp_path / "out")
    expected = weights_of(b if alpha == 1.0 else a)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)


def test_alpha_between_interpolates_and_the_result_loads_everywhere(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = pair
    result = merge(a, b, 0.3, tmp_path / "out")
    got = weights_of(tmp_path / "out")
    wa, wb = weights_of(a), weights_of(b)
    for k in got:
        if got[k].is_floating_point():
            assert torch.allclose(got[k], 0.3 * wb[k] + 0.7 * wa[k], atol=1e-7), k
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Weight merging" in card and "0.3 *" in card and result.alpha == 0.3
    assert "## Model soup" not in card and result.models == (str(b),)
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


# Model soups


def test_a_soup_of_identical_models_is_the_model(pair: tuple[Path, Path]) -> None:
    a, _ = pair
    wa = weights_of(a)
    got = soup_state_dicts([wa, wa, wa])
    assert got.keys() == wa.keys() and all(torch.equal(got[k], wa[k]) for k in wa)
    encoder = SentenceEncoder.load(a, device="cpu")
    souped = soup([encoder, encoder])
    assert souped is not encoder
    state, original = souped.state_dict(), encoder.state_dict()
    assert all(torch.equal(state[k], original[k]) for k in original)


def test_a_soup_of_two_is_the_elementwise_mean(pair: tuple[Path, Path]) -> None:
    wa, wb = (weights_of(p) for p in pair)
    got = soup_state_dicts([wa, wb])
    assert got.keys() == wa.keys()
    for k, v in got.items():
        assert v.dtype == wa[k].dtype, k
        if v.is_floating_point():
            assert torch.allclose(v, (wa[k] + wb[k]) / 2, rtol=0, atol=1e-7), k
        else:
            assert torch.equal(v, wa[k]), k
    # the encoders' soup is the same mean
    a, b = (SentenceEncoder.load(p, device="cpu") for p in pair)
    state, sa, sb = soup([a, b]).state_dict(), a.state_dict(), b.state_dict()
    assert all(torch.allclose(state[k], (sa[k] + sb[k]) / 2, rtol=0, atol=1e-7) for k in sa)


def test_a_weighted_soup_is_the_weighted_mean(pair: tuple[Path, Path], third: Path) -> None:
    wa, wb, wc = (weights_of(p) for p in (*pair, third))
    got = soup_state_dicts([wa, wb, wc], weights=[1, 2, 1])
    for k, v in got.items():
        if v.is_floating_point():
            assert torch.allclose(v, (wa[k] + 2 * wb[k] + wc[k]) / 4, rtol=0, atol=1e-6), k
    only_b = soup_state_dicts([wa, wb], weights=[0.0, 3.0])
    assert all(torch.equal(only_b[k], wb[k]) for k in wb)
    with pytest.raises(ValueError, match=r"3 models but 2 weights"):
        soup_state_dicts([wa, wb, wc], weights=[1, 1])
    with pytest.raises(ValueError, match=r"got -1"):
        soup_state_dicts([wa, wb], weights=[1, -1])
    with pytest.raises(ValueError, match="sum to 0"):
        soup_state_dicts([wa, wb], weights=[0, 0])


def test_a_soup_of_different_models_names_the_parameter(pair: tuple[Path, Path], tmp_path: Path) -> None:
    w2, w3 = torch.zeros(2), torch.zeros(3)
    with pytest.raises(MergeError, match=r"only in models\[0\] \['v'\], only in models\[1\] \['u'\]"):
        soup_state_dicts([{"w": w2, "v": w2}, {"w": w2, "u": w2}])
    with pytest.raises(MergeError, match=r"w: models\[0\] \(2,\) torch.float32 vs models\[2\] \(3,\)"):
        soup_state_dicts([{"w": w2}, {"w": w2}, {"w": w3}])
    with pytest.raises(MergeError, match=r"w: first \(2,\) torch.float32 vs second \(2,\) torch.float64"):
        soup_state_dicts([{"w": w2}, {"w": w2.double()}], names=["first", "second"])
    ids = torch.arange(4)
    with pytest.raises(MergeError, match="ids: non-float tensors differ"):
        soup_state_dicts([{"ids": ids}, {"ids": ids + 1}])
    a = SentenceEncoder.load(pair[0], device="cpu")
    other = SentenceEncoder.load(build_tiny_encoder(tmp_path / "no-normalize", normalize=False), device="cpu")
    with pytest.raises(MergeError, match="different module chains"):
        soup([a, other])
    with pytest.raises(ValueError, match="at least one model"):
        soup([])


def test_cli_soup_of_two_models_saves_their_mean(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = pair
    out = tmp_path / "soup"
    assert main(["-q", "merge", "-m", str(a), "--model", str(b), "-o", str(out)]) == 0
    got, wa, wb = weights_of(out), weights_of(a), weights_of(b)
    assert got.keys() == wa.keys()
    for k, v in got.items():
        expected = (wa[k] + wb[k]) / 2 if v.is_floating_point() else wa[k]
        assert torch.allclose(v, expected, rtol=0, atol=1e-7), k
    loaded = SentenceEncoder.load(out, device="cpu")
    assert loaded.encode(["the cat and the dog"]).shape == (1, 32)
    card = (out / "README.md").read_text()
    assert "## Model soup" in card and "uniform mean of 2" in card and "## Weight merging" not in card
    assert f"| {a} | 0.5 |" in card and f"| {b} | 0.5 |" in card


def test_cli_soup_then_merge_with_the_base(pair: tuple[Path, Path], third: Path, tmp_path: Path) -> None:
    base, b = pair
    out = tmp_path / "merged"
    argv = ["-q", "merge", "--base", str(base), "-m", str(b), "-m", str(third), "--alpha", "0.25"]
    assert main([*argv, "-o", str(out)]) == 0
    got, w0, wb, wc = (weights_of(p) for p in (out, base, b, third))
    for k, v in got.items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.25 * (wb[k] + wc[k]) / 2 + 0.75 * w0[k], rtol=0, atol=1e-6), k
    card = (out / "README.md").read_text()
    assert card.index("## Model soup") < card.index("## Weight merging")
    assert f"`0.25 * soup + 0.75 * {base}`" in card


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-m", "A", "-m", "B", "--alpha", "0.5"], "no --base was given"),
        (["-m", "A"], "one --model (A) and no --base"),
        (["--base", "A", "-m", "B"], "--base needs --alpha"),
        (["--base", "A", "-m", "B", "--alpha", "x"], "got 'x'"),
        (["--base", "A", "-m", "B", "--alpha", "1.5"], "got '1.5'"),
        (["--base", "A", "-m", "B", "--alpha", "auto"], "--alpha auto needs --eval-data"),
        (
            ["--base", "A", "-m", "B", "--alpha", "auto", "--eval-data", "D", "--eval-weights", "1,2"],
            "2 weights",
        ),
        (
            ["--base", "A", "-m", "B", "--alpha", "auto", "--eval-data", "D", "--eval-weights", "w"],
            "'w' is not",
        ),
        (["--base", "A", "-m", "B", "--alpha", "auto", "--eval-data", "D", "--grid", "0,2"], "--grid '0,2'"),
        (["--base", "A", "-m", "B", "--alpha", "auto", "--eval-data", "missing"], "--eval-data missing not"),
        (["-m", "A", "-m", "B", "--eval-weights", "1"], "--eval-weights weighs"),
    ],
)
def test_cli_errors_name_the_bad_value(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", "merge", *argv, "-o", str(tmp_path / "out")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# Choosing alpha on dev


def flat(state: Tensors) -> torch.Tensor:
    """Every floating parameter in one float64 vector, in name order."""
    return torch.cat([state[k].double().flatten() for k in sorted(state) if state[k].is_floating_point()])


class Toward:
    """A fake dev set whose score is minus the squared distance of the weights to a target."""

    primary_metric = "score"

    def __init__(self, name: str, target: torch.Tensor) -> None:
        self.name, self.target, self.calls = name, target, 0

    def __call__(self, encoder: SentenceEncoder) -> dict[str, float]:
        self.calls += 1
        return {"score": self.score(encoder.state_dict()), "other": 0.0}

    def score(self, state: Tensors) -> float:
        return -float(((flat(state) - self.target) ** 2).sum())


def toward(a: SentenceEncoder, b: SentenceEncoder, name: str, alpha: float) -> Toward:
    """A dev set that prefers the merge at ``alpha``: its target lies on the line from a to b."""
    fa, fb = flat(a.state_dict()), flat(b.state_dict())
    return Toward(name, fa + alpha * (fb - fa))


def test_choose_alpha_maximises_the_mean_of_several_dev_sets(pair: tuple[Path, Path]) -> None:
    a, b = (SentenceEncoder.load(p, device="cpu") for p in pair)
    near, far = toward(a, b, "near", 0.2), toward(a, b, "far", 0.8)
    grid = (0.0, 0.25, 0.5, 0.75, 1.0)
    sa, sb = a.state_dict(), b.state_dict()
    parts = {
        alpha: [ev.score({k: alpha * sb[k] + (1 - alpha) * sa[k] for k in sa}) for ev in (near, far)]
        for alpha in grid
    }

    def argmax(objective: dict[float, float]) -> float:
        return max(objective, key=lambda x: (objective[x], x))

    for weights in (None, (3.0, 1.0)):
        w = weights or (1.0, 1.0)
        expected = {x: (w[0] * p[0] + w[1] * p[1]) / sum(w) for x, p in parts.items()}
        choice = choose_alpha(a, b, Objective.of([near, far], weights), grid, known={1.0: 0.0})
        assert choice.alpha == argmax(expected)
        assert choice.scores == pytest.approx(expected, rel=1e-5)
        assert choice.parts[0.5] == pytest.approx({"near_score": parts[0.5][0], "far_score": parts[0.5][1]})
    # each dev set alone would choose otherwise: the mean decided
    alone = {argmax({x: p[i] for x, p in parts.items()}) for i in (0, 1)}
    assert choose_alpha(a, b, [near, far], grid).alpha not in alone
    assert near.calls == far.calls == 3 * len(grid)  # a known score is one evaluator's: ignored here
    assert choose_alpha(a, b, [near, far], grid).metric == "the mean of near_score, far_score"
    with pytest.raises(ValueError, match="same column"):
        Objective.of([near, near])
    with pytest.raises(ValueError, match="2 evaluators but 1 weights"):
        Objective.of([near, far], [1.0])


def test_merge_records_each_dev_set_in_the_readme(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = pair
    ea, eb = (SentenceEncoder.load(p, device="cpu") for p in pair)
    devs = [toward(ea, eb, "near", 0.3), toward(ea, eb, "far", 0.9)]
    result = merge(a, b, None, tmp_path / "out", devs, (0.0, 0.5, 1.0), eval_weights=[1, 1])
    assert result.alpha == 0.5 and set(result.parts) == {0.0, 0.5, 1.0}
    for x, part in result.parts.items():
        assert set(part) == {"near_score", "far_score"}
        assert result.scores[x] == pytest.approx((part["near_score"] + part["far_score"]) / 2)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "alpha was chosen on a dev set by the mean of near_score, far_score" in card
    assert "| alpha | near_score | far_score | objective |" in card
    assert f"| **0.5** | {result.parts[0.5]['near_score']:.4f} |" in card


def test_known_scores_apply_to_one_model_only(pair: tuple[Path, Path], third: Path, tmp_path: Path) -> None:
    """A known score (alpha 1's, from training) is the model's: a soup's alpha 1 is measured."""
    a, b = pair
    ea, eb = (SentenceEncoder.load(p, device="cpu") for p in pair)
    dev = toward(ea, eb, "dev", 0.5)
    grid = (0.0, 0.5, 1.0)
    one = merge(a, b, None, tmp_path / "one", dev, grid, known={1.0: 123.0})
    assert one.scores[1.0] == 123.0 and dev.calls == 2
    souped = merge(a, [b, third], None, tmp_path / "soup", dev, grid, known={1.0: 123.0})
    assert souped.scores[1.0] != 123.0 and dev.calls == 5
    assert souped.model == "soup of 2 models" and souped.weights == (0.5, 0.5)


def test_cli_alpha_auto_chooses_on_a_dev_set(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = pair
    beir = write_beir(tmp_path / "beir")
    out = tmp_path / "merged"
    argv = ["-q", "merge", "--base", str(a), "--model", str(b), "--alpha", "auto", "--output", str(out)]
    assert main([*argv, "--eval-data", str(beir), "--grid", "0,0.5,1"]) == 0
    card = (out / "README.md").read_text()
    assert "alpha was chosen on a dev set by ndcg@10" in card and card.count("\n| ") >= 4
    assert "| alpha | ndcg@10 |" in card


def test_cli_alpha_auto_on_a_beir_folder_and_an_sts_file(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = pair
    beir = write_beir(tmp_path / "beir")
    sts = tmp_path / "sts-dev.tsv"
    sts.write_text(
        "the cat sat\ta cat sat\t5.0\nthe dog runs\ta fish swims\t1.0\n"
        "birds fly\tbirds fly over trees\t4.0\nthe river\tthe mat\t0.5\n"
    )
    out = tmp_path / "merged"
    argv = ["-q", "merge", "--base", str(a), "-m", str(b), "--alpha", "auto", "-o", str(out), "--grid", "0,1"]
    assert main([*argv, "--eval-data", str(beir), "--eval-data", str(sts), "--eval-weights", "2,1"]) == 0
    card = (out / "README.md").read_text()
    assert "| alpha | beir-dev_ndcg@10 | sts-dev_spearman | objective |" in card
    assert "0.6667 x beir-dev_ndcg@10 + 0.3333 x sts-dev_spearman" in card


def test_known_scores_are_not_measured_again(pair: tuple[Path, Path]) -> None:
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

    choice = choose_alpha(a, b, Dev(), (0.0, 0.5, 1.0), known={1.0: 0.9})
    assert seen == [0.0, 0.5]  # alpha 1 was known
    assert choice.scores == {0.0: 0.5, 0.5: 1.0, 1.0: 0.9} and choice.alpha == 0.5
    assert choice.parts[1.0] == {"score": 0.9} and choice.metric == "score"
    assert choose_alpha(a, b, Dev(), (0.0, 0.5, 1.0), known={1.0: 1.0}).alpha == 1.0  # ties: the larger
