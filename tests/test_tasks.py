"""Tasks: loss dicts, gradients, the frozen teacher, the FD projection and the logit-scale clamp."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import ToyPairs

from compt.clip.models import create_model
from compt.clip.tasks import ClipTask, DistillTask, build_task
from compt.clip.teacher_cache import fill_teacher_cache
from compt.config import TrainConfig
from compt.distributed import DistInfo
from compt.errors import UserError
from compt.tasks import freeze
from compt.train.optim import build_optimizer


def _batch(n: int = 8, captions: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ds = ToyPairs(n, captions=captions)
    return ds.images, ds.tokens, torch.arange(n)


def _model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name)


@pytest.mark.parametrize("name", ["test/A", "test/B", "test/C"])
def test_clip_task_every_parameter_gets_a_gradient(name: str) -> None:
    task = ClipTask(_model(name))
    out = task(*_batch())
    assert set(out) == {"loss", "clip_loss", "logit_scale"}
    out["loss"].backward()
    missing = [n for n, p in task.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_post_step_clamps_logit_scale_at_100() -> None:
    task = ClipTask(_model("test/A"))
    with torch.no_grad():
        task.student.logit_scale.fill_(7.0)
    task.post_step()
    assert task.student.logit_scale.item() == pytest.approx(math.log(100))


@pytest.mark.parametrize("kind,parts", [("fd", {"fd_image", "fd_text"}), ("affinity", {"affinity"}),
                                        ("icl", {"icl"}), ("fd+affinity", {"fd_image", "fd_text", "affinity"})])
def test_distill_task_teacher_frozen_and_unchanged_after_step(kind: str, parts: set[str]) -> None:
    teacher = _model("test/B", seed=1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    task = DistillTask(_model("test/C"), teacher=teacher, kind=kind, weight=500.0, student_dim=24, teacher_dim=16)
    opt = build_optimizer(task, TrainConfig())
    task.train()
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    out = task(*_batch())
    assert set(out) == {"loss", "clip_loss", "logit_scale"} | parts
    expected = out["clip_loss"] + 500 * (out.get("fd_image", 0) + out.get("fd_text", 0)) + out.get("affinity", 0) \
        + out.get("icl", 0)
    torch.testing.assert_close(out["loss"].detach(), expected)
    out["loss"].backward()
    opt.step()
    task.post_step()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}


def test_fd_projection_only_when_embed_dims_differ() -> None:
    grown = DistillTask(_model("test/C"), teacher=_model("test/B"), kind="fd", weight=1.0, student_dim=24,
                        teacher_dim=16)
    assert grown.proj is not None and grown.proj.weight.shape == (16, 24) and grown.proj.bias is None
    torch.testing.assert_close(grown.proj.weight, torch.eye(16, 24))
    grown(*_batch())["loss"].backward()
    assert grown.proj.weight.grad is not None
    same = DistillTask(_model("test/B"), teacher=_model("test/A"), kind="fd", weight=1.0, student_dim=16,
                       teacher_dim=16)
    assert same.proj is None and same.extra_state() == {}


def test_fd_is_zero_when_student_equals_teacher() -> None:
    teacher = _model("test/B", seed=3)
    student = create_model("test/B", state_dict=teacher.state_dict())
    task = DistillTask(student, teacher=teacher, kind="fd", weight=500.0, student_dim=16, teacher_dim=16)
    out = task(*_batch())
    assert out["fd_image"].item() < 1e-12 and out["fd_text"].item() < 1e-12


def test_cached_teacher_features_give_the_same_loss() -> None:
    teacher = _model("test/B", seed=4)
    ds = ToyPairs(8, captions=2)
    cache = fill_teacher_cache(teacher, ds, captions=2, embed_dim=16, batch_size=3, info=DistInfo())
    student = _model("test/C", seed=5)
    live = DistillTask(student, teacher=teacher, kind="fd+affinity", weight=500.0, student_dim=24, teacher_dim=16)
    cached = DistillTask(student, teacher=None, cache=cache, kind="fd+affinity", weight=500.0, student_dim=24,
                         teacher_dim=16)
    a, b = live(*_batch()), cached(*_batch())
    for k in a:  # the cache holds bf16 rows: each teacher value within 2^-9 (relative) of the fp32 one
        torch.testing.assert_close(a[k], b[k], rtol=2e-3, atol=1e-5)
    assert cache.image.dtype == cache.text.dtype == torch.bfloat16
    images, tokens, index = _batch()
    rows = cache.rows(index)  # what the loader delivers with the batch: same loss, no host gather in the task
    for k, v in cached(images, tokens, index, *rows).items():
        torch.testing.assert_close(v, b[k], rtol=0, atol=0)


def test_build_task_and_errors() -> None:
    assert type(build_task(_model("test/A"))) is ClipTask
    assert type(build_task(_model("test/A"), distill="fd", teacher=freeze(_model("test/A")), student_dim=16,
                           teacher_dim=16)) is DistillTask
    with pytest.raises(UserError, match="unknown distillation"):
        build_task(_model("test/A"), distill="kl", teacher=_model("test/A"), student_dim=16, teacher_dim=16)


class _FixedFeatures(torch.nn.Module):
    """A stand-in CLIP whose forward returns fixed fp32 features (B, E), (B·K, E), scale (and bias)."""

    def __init__(self, b: int, k: int, e: int, seed: int, bias: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.image = torch.nn.functional.normalize(torch.randn(b, e, generator=g), dim=-1).requires_grad_()
        self.text = torch.nn.functional.normalize(torch.randn(b * k, e, generator=g), dim=-1).requires_grad_()
        self.out = (self.image, self.text, torch.tensor(14.3)) + ((torch.tensor(-10.0),) if bias else ())

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.out


@pytest.mark.parametrize("kind", ["none", "siglip", "fd", "affinity", "icl", "fd+affinity"])
def test_losses_run_in_fp32_under_bf16_autocast(kind: str) -> None:
    """Given the same fp32 features, the loss (and its gradient) under bf16 autocast equals the fp32 one."""
    b, k, images, tokens = 8, 2, torch.zeros(8, 3, 4, 4), torch.zeros(8, 2, 5, dtype=torch.long)
    student = _FixedFeatures(b, k, 24, seed=0, bias=kind == "siglip")
    if kind in ("none", "siglip"):
        task = build_task(student, objective="siglip" if kind == "siglip" else None)
    else:
        task = build_task(student, distill=kind, weight=3.0, teacher=_FixedFeatures(b, k, 16, seed=1),
                          student_dim=24, teacher_dim=16)
        if task.proj is not None:  # one that is not the identity: its matmul is a loss input too
            g = torch.Generator().manual_seed(2)
            with torch.no_grad():
                task.proj.weight.add_(0.1 * torch.randn(task.proj.weight.shape, generator=g))
    runs = []
    for autocast in (False, True):
        student.image.grad = student.text.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = task(images, tokens, torch.arange(b))
        out["loss"].backward()
        runs.append((out, student.image.grad.clone(), student.text.grad.clone()))
    (fp32, gi32, gt32), (bf16, gi16, gt16) = runs
    assert fp32["loss"].dtype == bf16["loss"].dtype == torch.float32
    for name in fp32:
        torch.testing.assert_close(bf16[name], fp32[name], rtol=1e-6, atol=1e-6, msg=name)
    torch.testing.assert_close(gi16, gi32, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(gt16, gt32, rtol=1e-6, atol=1e-7)
