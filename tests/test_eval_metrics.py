"""Evaluation metrics against hand-computed cases, the linear probe, and `evaluate` end to end."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from compt.clip.data.text import tokenize
from compt.clip.evaluation import (
    EvalSuite,
    RetrievalSet,
    ZeroShotTask,
    evaluate,
    linear_probe,
    retrieval_recall,
    topk_accuracy,
    zeroshot_classifier,
)


def test_topk_accuracy_hand_case_with_ties() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0],    # label 1: best → hit@1
                           [0.5, 0.2, 0.3],    # label 1: worst → hit only @3
                           [0.2, 0.2, 0.6]])   # label 0: tied with class 1 → ties count against → hit only @3
    acc = topk_accuracy(logits, torch.tensor([1, 1, 0]), ks=(1, 2, 3, 5))
    assert acc[1] == pytest.approx(100 / 3) and acc[2] == pytest.approx(100 / 3)
    assert acc[3] == 100.0 and acc[5] == 100.0
    assert topk_accuracy(torch.zeros(4, 10), torch.arange(4), ks=(1,))[1] == 0.0  # constant model: no credit


def test_retrieval_recall_hand_case_multi_caption() -> None:
    sim = torch.tensor([[0.9, 0.1, 0.5, 0.2],   # image 0 owns captions 0, 1
                        [0.8, 0.3, 0.7, 0.1],   # image 1 owns caption 2
                        [0.2, 0.6, 0.4, 0.3]])  # image 2 owns caption 3
    r = retrieval_recall(sim, torch.tensor([0, 0, 1, 2]), ks=(1, 2, 5))
    # i2t ranks (wrong captions ≥ best own): 0, 1, 2   t2i ranks (other images ≥ own): 0, 2, 0, 0
    assert r["i2t_r1"] == pytest.approx(100 / 3) and r["i2t_r2"] == pytest.approx(200 / 3) and r["i2t_r5"] == 100
    assert r["t2i_r1"] == 75.0 and r["t2i_r2"] == 75.0 and r["t2i_r5"] == 100.0


def test_i2t_counts_a_hit_through_any_caption() -> None:
    sim = torch.tensor([[0.1, 0.9, 0.5],        # image 0's second caption is its best
                        [0.2, 0.3, 0.8]])
    r = retrieval_recall(sim, torch.tensor([0, 0, 1]), ks=(1,))
    assert r["i2t_r1"] == 100.0 and r["t2i_r1"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval_recall(torch.zeros(2, 1), torch.tensor([0]))


def test_linear_probe_separable_and_deterministic() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=g) * 4
    y = torch.arange(200) % 4
    x = centres[y] + torch.randn(200, 8, generator=g)
    a = linear_probe(x[:120], y[:120], x[120:], y[120:], 4)
    assert a == 100.0 and a == linear_probe(x[:120], y[:120], x[120:], y[120:], 4)
    shuffled = y[torch.randperm(200, generator=g)]
    assert linear_probe(x[:120], shuffled[:120], x[120:], shuffled[120:], 4) < 60  # no signal → near chance


# ----------------------------------------------------------------------------------------------- fake CLIP
WORDS = ("red", "green", "blue")
WORD_IDS = [int(tokenize(w, 8)[0, 1]) for w in WORDS]


class FakeCLIP(torch.nn.Module):
    """Image embedding = the image's 3 pixel values; text embedding = one-hot of the caption's first word."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(1.0))
        self.visual = torch.nn.Identity()

    def encode_image(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = x.flatten(1)
        return f / f.norm(dim=1, keepdim=True) if normalize else f

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        first = tokens[:, 1]
        return torch.stack([(first == w).float() for w in WORD_IDS], dim=1)


class Vectors(Dataset):
    def __init__(self, rows: list[list[float]]) -> None:
        self.x = torch.tensor(rows, dtype=torch.float32).view(-1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def test_zeroshot_classifier_averages_normalised_prompts() -> None:
    w = zeroshot_classifier(FakeCLIP(), WORDS, ("{}", "{} thing.", "{}!"), 8)
    assert torch.allclose(w, torch.eye(3))  # (D, C): each class its own one-hot, re-normalised


def fake_suite() -> EvalSuite:
    images = Vectors([[1, 0, 0], [0, 1, 0], [0.1, 0.2, 0.9], [0.9, 0.8, 0]])
    task = ZeroShotTask(name="colour", images=images, labels=torch.tensor([0, 2, 2]), classnames=WORDS,
                        templates=("{}", "a {}"), indices=torch.tensor([0, 1, 2]),
                        probe_images=Vectors([[1, 0, 0], [0, 1, 0], [0, 0, 1]] * 4), probe_labels=torch.arange(12) % 3)
    captions = ["red", "green", "blue", "green"]           # owners 0, 1, 2, 3
    retrieval = RetrievalSet(images=images, tokens=tokenize(captions, 8), text_to_image=torch.arange(4))
    return EvalSuite(name="fake", context_length=8, zeroshot=(task,), retrieval=retrieval)


def test_evaluate_end_to_end_exact_numbers() -> None:
    out = evaluate(FakeCLIP(), fake_suite(), batch_size=2)
    # zero-shot: image0 → red ✓; image1 → green, label blue ✗ (blue ties red at 0: rank 2, so only top-3 ✓); image2 ✓
    assert out["zeroshot/colour/top1"] == pytest.approx(200 / 3) and out["zeroshot/colour/top5"] == 100.0
    # retrieval sims (rows images, cols captions red/green/blue/green): image1 and image3 both own a "green"
    # caption. i2t: image1's own caption ties the other "green" (ties count against) ✗, image3 (0.75, 0.66, 0)
    # prefers "red" ✗ → 50 %. t2i: caption 3 "green" finds image1 (1.0) before its image3 (0.66) ✗ → 75 %.
    assert out["retrieval/i2t_r1"] == 50.0 and out["retrieval/t2i_r1"] == 75.0
    assert out["retrieval/i2t_r5"] == 100.0 and out["retrieval_r1"] == 62.5
    assert out["zeroshot_top1"] == out["zeroshot/colour/top1"]
    assert out["linear_probe/colour/top1"] == pytest.approx(200 / 3)  # probe: image1's features say green


def test_evaluate_restores_modes_and_runs_on_a_real_model() -> None:
    from compt.clip.data import build_eval_suite
    from compt.clip.models import create_model, get_model_config
    from compt.clip.settings import ClipDataConfig

    cfg = get_model_config("test/A")
    model = create_model(cfg)
    model.train()
    model.visual.eval()  # mixed modes must come back exactly
    before = {name: m.training for name, m in model.named_modules()}
    suite = build_eval_suite(ClipDataConfig(eval_samples=60, probe_samples=40), cfg)
    out = evaluate(model, suite, batch_size=32)
    assert {name: m.training for name, m in model.named_modules()} == before
    keys = {f"zeroshot/{t}/top{k}" for t in ("shape", "colour", "count", "size", "position") for k in (1, 5)}
    keys |= {f"retrieval/{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} | {"zeroshot_top1", "retrieval_r1"}
    assert keys <= set(out) and all(0.0 <= v <= 100.0 for v in out.values())
    assert "linear_probe/shape/top1" in out
    assert out == evaluate(model, suite, batch_size=7)  # batch size does not change results
