"""The training engine on the test family: schedule, optimizer groups, data order, golden losses, teacher
cache, evaluation, FLOPs accounting and one trainer step against a hand-written reference."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import ToyPairs, final_weights, read_metrics, stage_kwargs

from compt.clip.flops import model_flops
from compt.clip.losses import multi_caption_clip_loss
from compt.clip.models import create_model, get_model_config
from compt.clip.tasks import encode
from compt.config import TrainConfig
from compt.errors import UserError
from compt.train import load_result, train_stage
from compt.train.optim import build_optimizer, lr_at, no_weight_decay
from compt.train.sampler import StepBatchSampler, global_batch

# Golden loss curves, generated once with this code (torch 2.14 CPU, fp32) and pinned here: a change of the
# loss, the schedule, the optimizer or the data order shows up as a mismatch (tolerance 1e-4).
GOLDEN_CLIP = [4.762624, 3.524632, 3.01758, 2.864525, 2.812356, 2.803963]          # test/A, 1.5 epochs
GOLDEN_DISTILL = [137.367477, 136.107468, 117.511002, 106.825089]                  # test/B ← test/A, fd+affinity
# (live teacher: the exact fp32 reference; the cache stores bf16 rows, see test_teacher_cache_…)


def test_golden_loss_curve_clip(tmp_path: Path) -> None:
    train_stage(**stage_kwargs(tmp_path, model="test/A", epochs=1.5))
    assert [r["loss"] for r in read_metrics(tmp_path)] == pytest.approx(GOLDEN_CLIP, abs=1e-4)


def test_golden_loss_curve_distill(tmp_path: Path) -> None:
    train_stage(**stage_kwargs(tmp_path, model="test/B", teacher="test/A", distill="fd+affinity", epochs=1,
                               teacher_cache=False))
    assert [r["loss"] for r in read_metrics(tmp_path)] == pytest.approx(GOLDEN_DISTILL, abs=1e-4)


def test_lr_schedule_warmup_cosine_floor() -> None:
    lrs = [lr_at(s, base_lr=1e-3, min_lr=1e-5, warmup=4, total=20) for s in range(20)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))
    assert lrs[-1] > 1e-5 and lr_at(20, base_lr=1e-3, min_lr=1e-5, warmup=4, total=20) == pytest.approx(1e-5)
    mid = lr_at(12, base_lr=1e-3, min_lr=1e-5, warmup=4, total=20)
    assert mid == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert lr_at(0, base_lr=1.0, min_lr=0.0, warmup=1, total=1) == 1.0


def test_weight_decay_groups_follow_open_clip() -> None:
    model = create_model("test/A")
    decayed = {n for n, p in model.named_parameters() if not no_weight_decay(n, p)}
    assert {"token_embedding.weight", "positional_embedding", "visual.proj", "text_projection",
            "visual.conv1.weight", "visual.transformer.resblocks.0.attn.in_proj_weight"} <= decayed
    assert not any("ln_" in n or "bias" in n or "logit_scale" in n or n == "visual.class_embedding" for n in decayed)
    groups = build_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    assert [g["weight_decay"] for g in groups] == [0.0, 0.1]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert groups[0]["betas"] == (0.9, 0.98) and groups[0]["eps"] == 1e-6


def test_data_order_epochs_shards_and_resume() -> None:
    n, b = 10, 4
    stream = torch.cat([global_batch(n, b, seed=3, step=s) for s in range(5)])  # 20 samples = 2 epochs
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:].tolist()) == list(range(10))
    shards = [list(StepBatchSampler(n, batch_size=b, accum=2, seed=3, start=0, stop=5, shard_id=r, num_shards=2))
              for r in range(2)]
    for step in range(5):
        for j in range(2):  # micro-batch j of step: shard 0 then shard 1 = the global micro-batch
            joined = shards[0][2 * step + j] + shards[1][2 * step + j]
            assert joined == global_batch(n, b, seed=3, step=step)[2 * j:2 * j + 2].tolist()
    resumed = list(StepBatchSampler(n, batch_size=b, accum=2, seed=3, start=3, stop=5, shard_id=1, num_shards=2))
    assert resumed == shards[1][6:]


@pytest.mark.parametrize("epochs,warmup_kw,from_scratch,expect_steps,expect_warmup", [
    (1.3, {}, True, 6, 2),                         # ceil(1.3 · 64 / 16) steps; train.warmup_steps
    (1, {"warmup_steps": 50}, True, 4, 4),         # warmup clamped to the stage length
    (1, {"stage_warmup_steps": 3}, False, 4, 3),   # grown stage: train.stage_warmup_steps
])
def test_steps_and_warmup(tmp_path: Path, epochs: float, warmup_kw: dict, from_scratch: bool, expect_steps: int,
                          expect_warmup: int) -> None:
    result = train_stage(**stage_kwargs(tmp_path, epochs=epochs, from_scratch=from_scratch, **warmup_kw))
    records = read_metrics(tmp_path)
    assert result.steps == expect_steps == len(records) and result.samples == 16 * expect_steps
    assert records[0]["lr"] == pytest.approx(1e-3 / expect_warmup)
    assert records[expect_warmup - 1]["lr"] == pytest.approx(1e-3)


def test_member_warmup_overrides(tmp_path: Path) -> None:
    train_stage(**stage_kwargs(tmp_path, epochs=1, member={"warmup_steps": 4}))
    assert read_metrics(tmp_path)[0]["lr"] == pytest.approx(1e-3 / 4)


def test_member_lr_is_the_stage_peak(tmp_path: Path) -> None:
    train_stage(**stage_kwargs(tmp_path, epochs=1, member={"warmup_steps": 2, "lr": 4e-4}))
    lrs = [r["lr"] for r in read_metrics(tmp_path)]
    assert lrs[0] == pytest.approx(2e-4) and lrs[1] == pytest.approx(4e-4) and max(lrs) == pytest.approx(4e-4)


def test_finished_stage_returns_stored_result(tmp_path: Path) -> None:
    first = train_stage(**stage_kwargs(tmp_path, epochs=1))
    calls = []
    again = train_stage(**stage_kwargs(tmp_path, epochs=1), on_step=calls.append)
    assert calls == [] and again == first == load_result(tmp_path)
    assert (tmp_path / "tb").is_dir() and any((tmp_path / "tb").iterdir())


def test_evaluation_history_and_metrics(tmp_path: Path) -> None:
    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        assert not model.training and not torch.is_grad_enabled()
        return {"acc": float(len(evals.append(1) or evals))}

    evals: list[int] = []
    result = train_stage(**stage_kwargs(tmp_path, epochs=3, eval_every_epochs=1), evaluate=evaluate)
    assert [h["step"] for h in result.history] == [4, 8, 12] and [h["acc"] for h in result.history] == [1, 2, 3]
    assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0]
    assert result.metrics["acc"] == 3 and result.metrics["train_loss"] == read_metrics(tmp_path)[-1]["loss"]
    assert [r["acc"] for r in read_metrics(tmp_path, "eval")] == [1, 2, 3]
    assert result.wall_clock_s > 0


@pytest.mark.parametrize("mem_gb", [4.0, 0.0])  # in memory / memory-mapped under the stage folder
def test_teacher_cache_same_losses_and_flops(tmp_path: Path, mem_gb: float) -> None:
    kw = {"model": "test/C", "teacher": "test/B", "distill": "fd+affinity", "epochs": 2}
    live = train_stage(**stage_kwargs(tmp_path / "live", teacher_cache=False, **kw))
    mapped: list[bool] = []  # whether the cache files exist while the stage trains (deleted once it is done)
    cached = train_stage(**stage_kwargs(tmp_path / "cached", teacher_cache=True, teacher_cache_mem_gb=mem_gb, **kw),
                         on_step=lambda step: mapped.append((tmp_path / "cached" / "teacher_cache").is_dir()))
    a, b = read_metrics(tmp_path / "live"), read_metrics(tmp_path / "cached")
    for ra, rb in zip(a, b, strict=True):  # bf16 rows: each teacher value within 2^-9 of the live fp32 one
        for k in ("loss", "clip_loss", "fd_image", "fd_text", "affinity"):
            assert ra[k] == pytest.approx(rb[k], rel=5e-3, abs=1e-5)
    student, teacher = _fwd("test/C"), _fwd("test/B")
    assert live.train_flops == pytest.approx(live.samples * (3 * student + teacher))
    assert cached.train_flops == pytest.approx(cached.samples * 3 * student + 64 * teacher)
    assert set(mapped) == {mem_gb == 0.0} and not (tmp_path / "cached" / "teacher_cache").exists()


def _fwd(name: str) -> float:
    return model_flops(get_model_config(name)).per_sample(2)  # 2 captions per image


def test_uncached_when_dataset_is_not_deterministic(tmp_path: Path) -> None:
    data = ToyPairs(64, captions=2, deterministic=False)
    r = train_stage(**stage_kwargs(tmp_path, model="test/B", teacher="test/A", epochs=1, dataset=data))
    per = 3 * _fwd("test/B") + _fwd("test/A")
    assert r.train_flops == pytest.approx(r.samples * per)


@pytest.mark.parametrize("accum,clip", [(1, 0.0), (2, 0.0), (1, 0.5), (2, 0.5)])
def test_one_step_matches_hand_written_step(tmp_path: Path, accum: int, clip: float) -> None:
    """One trainer step = mean of micro-batch InfoNCE losses → backward → clip → AdamW → clamp, by hand."""
    # eps = 1 makes AdamW's first update scale-sensitive (≈ lr·g for small g), so clipping shows in the weights
    kw = stage_kwargs(tmp_path, epochs=0.25, accum_steps=accum, grad_clip=clip, warmup_steps=1, eps=1.0)
    train_stage(**kw)
    model = create_model(kw["spec"].model, state_dict=kw["init_state"])
    opt = build_optimizer(model, kw["spec"].train)
    batch = global_batch(64, 16, seed=0, step=0)
    data = kw["dataset"]
    loss = sum(multi_caption_clip_loss(*encode(model, data.images[idx], data.tokens[idx]))
               for idx in batch.chunk(accum)) / accum
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    ours = final_weights(tmp_path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ours[k], v, rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")


def test_bf16_autocast_runs_on_cpu(tmp_path: Path, monkeypatch) -> None:
    """precision = "bf16" really computes the student's matmuls in bf16 (an MLP activation inside a block is
    bf16 in training), and the loss stays fp32 and finite; "fp32" keeps the same activation fp32."""
    import torch.nn as nn

    seen: dict[str, set] = {"bf16": set(), "fp32": set()}
    real = nn.Linear.forward

    def spy(self, x):
        out = real(self, x)
        if self.training and torch.is_grad_enabled():
            seen[mode].add(out.dtype)
        return out

    monkeypatch.setattr(nn.Linear, "forward", spy)
    for mode in ("bf16", "fp32"):
        result = train_stage(**stage_kwargs(tmp_path / mode, model="test/B", teacher="test/A", epochs=0.5,
                                            precision=mode))
        assert math.isfinite(result.metrics["train_loss"])
    assert seen["bf16"] == {torch.bfloat16} and seen["fp32"] == {torch.float32}


def test_bad_settings_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="divisible"):
        train_stage(**stage_kwargs(tmp_path, accum_steps=3))
    with pytest.raises(UserError, match="precision"):
        train_stage(**stage_kwargs(tmp_path, precision="fp16"))
    train_stage(**stage_kwargs(tmp_path / "a", model="test/A", epochs=0.25, ckpt_every_steps=1))
    (tmp_path / "a" / "result.json").unlink()
    with pytest.raises(UserError, match="another stage"):
        train_stage(**stage_kwargs(tmp_path / "a", model="test/B", epochs=0.25))


def test_compiled_student_trains_like_eager(tmp_path: Path, monkeypatch) -> None:
    """train.compile compiles every transformer block (aot_eager here: inductor's C++ build takes minutes
    on CPU); the stage computes the same losses and its checkpoint keeps open_clip's keys."""
    from torch._dynamo.utils import counters

    from compt import distributed

    monkeypatch.setattr(distributed, "COMPILE_BACKEND", "aot_eager")
    counters.clear()
    eager = train_stage(**stage_kwargs(tmp_path / "eager", model="test/A", epochs=0.5))
    compiled = train_stage(**stage_kwargs(tmp_path / "compiled", model="test/A", epochs=0.5, compile=True))
    assert counters["stats"]["unique_graphs"] > 0
    for a, b in zip(read_metrics(tmp_path / "eager"), read_metrics(tmp_path / "compiled"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    wa, wb = final_weights(tmp_path / "eager"), final_weights(tmp_path / "compiled")
    assert wa.keys() == wb.keys() and eager.steps == compiled.steps


def test_stage_lr_with_faster_decay_reaches_the_floor_early_and_stays() -> None:
    from compt.train.optim import stage_lr_at

    kw = dict(base_lr=1e-3, min_lr=1e-5, warmup=4, total=20)
    assert [stage_lr_at(s, **kw) for s in range(20)] == [lr_at(s, **kw) for s in range(20)]   # f = 1: unchanged
    fast = [stage_lr_at(s, decay_fraction=0.5, **kw) for s in range(20)]
    assert fast[:4] == [lr_at(s, **kw) for s in range(4)]                    # same warmup and peak
    assert fast[8] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))              # half-way down after 4 of 8 steps
    assert fast[12:] == [pytest.approx(1e-5)] * 8                            # floor from step 4 + 8 on
    with pytest.raises(ValueError, match="decay_fraction must be in"):
        stage_lr_at(0, decay_fraction=0.0, **kw)


@pytest.mark.parametrize("schedule, mid, end", [("constant", 1.0, 1.0), ("linear", 0.5, 0.0), ("cosine", 0.5, 0.0)])
def test_distill_scale_decays_to_zero_over_the_stage(schedule: str, mid: float, end: float) -> None:
    from compt.train.optim import distill_scale

    assert distill_scale(0, 10, schedule) == 1.0
    assert distill_scale(5, 10, schedule) == pytest.approx(mid)
    assert distill_scale(10, 10, schedule) == pytest.approx(end, abs=1e-12)
    assert distill_scale(3, 10, "cosine") > distill_scale(3, 10, "linear")   # cosine keeps more early on


def test_member_decay_fraction_reaches_the_floor_halfway(tmp_path: Path) -> None:
    train_stage(**stage_kwargs(tmp_path, epochs=3, min_lr=1e-5, member={"warmup_steps": 2, "decay_fraction": 0.5}))
    lrs = [r["lr"] for r in read_metrics(tmp_path)]                      # 12 steps: warmup 2, cosine over 5
    assert len(lrs) == 12 and lrs[1] == lrs[2] == pytest.approx(1e-3) and lrs[3] < 1e-3
    assert lrs[7:] == [pytest.approx(1e-5)] * 5 and lrs[6] > 1e-5


def test_distill_schedule_scales_the_distillation_terms(tmp_path: Path) -> None:
    kw = {"model": "test/C", "teacher": "test/B", "distill": "fd", "epochs": 2}
    train_stage(**stage_kwargs(tmp_path / "lin", member={"distill_weight": 50.0, "distill_schedule": "linear"}, **kw))
    rows = read_metrics(tmp_path / "lin")                                # 8 steps: s(t) = 1 − step/8
    for step, r in enumerate(rows):
        fd = 50.0 * (1 - step / 8) * (r["fd_image"] + r["fd_text"])
        assert r["loss"] == pytest.approx(r["clip_loss"] + fd, rel=1e-5, abs=1e-7)


def test_patch_dropout_trains_on_kept_patches_and_counts_their_flops(tmp_path: Path) -> None:
    import dataclasses

    result = train_stage(**stage_kwargs(tmp_path, epochs=1, model="test/B", member={"patch_dropout": 0.5}))
    base = get_model_config("test/B")
    dropped = dataclasses.replace(base, vision=dataclasses.replace(base.vision, patch_dropout=0.5))
    assert result.train_flops == pytest.approx(result.samples * 3 * model_flops(dropped).per_sample(2))
    assert model_flops(dropped).image < model_flops(base).image
    saved = torch.load(tmp_path / "final.pt", weights_only=True)["model_config"]
    assert saved["vision"]["patch_dropout"] == 0.0                        # checkpoints describe the architecture
