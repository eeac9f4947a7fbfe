"""Distillation, data and file guards on inputs where the right rule and a plausible wrong one differ: ICL's
renormalisation of projected student features, the held-out ``eval_path`` in the data fingerprint, the teacher
cache keyed per run and never reused by a fresh stage, a failed checkpoint write keeping the previous file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import ToyPairs, stage_kwargs

from compt import checkpoint as ck
from compt.clip import teacher_cache
from compt.clip.models import create_model, get_model_config
from compt.clip.tasks import DistillTask
from compt.config import TrainConfig, config_from_dict
from compt.distributed import DistInfo
from compt.errors import UserError
from compt.stage import teacher_cache_folder
from compt.train import train_stage


# ----------------------------------------------------------------------------------------------- ICL
def _unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_icl_contrasts_the_renormalised_projection_of_the_student() -> None:
    """Student width 24 → teacher width 16 through a random T: ICL reads normalise(T s), whose norm differs from
    that of T s; the reference is a loop over the InfoNCE rows of the docstring."""
    torch.manual_seed(0)
    task = DistillTask(create_model("test/C"), teacher=create_model("test/B"), kind="icl", weight=1.0,
                       student_dim=24, teacher_dim=16)
    with torch.no_grad():
        task.proj.weight.copy_(0.4 * torch.randn(16, 24, generator=torch.Generator().manual_seed(1)))
    b, k, scale = 6, 2, torch.tensor(8.0)
    image, text = _unit(b, 24, seed=2), _unit(b, k, 24, seed=3)
    t_image, t_text = _unit(b, 16, seed=4), _unit(b, k, 16, seed=5)
    out = task.losses(image, text, scale, None, t_image, t_text, torch.tensor(20.0))
    w = task.proj.weight.detach()
    assert ((image @ w.T).norm(dim=-1) - 1).abs().min() > 0.05       # the projection really changes the norm
    s_image, s_text = F.normalize(image @ w.T, dim=-1), F.normalize(text @ w.T, dim=-1)

    def nce(queries: torch.Tensor, keys: torch.Tensor) -> float:
        total = 0.0
        for i in range(b):
            row = torch.stack([scale * queries[i] @ keys[j] for j in range(b)])
            total += float(torch.logsumexp(row, 0) - row[i])
        return total / b

    want = sum((nce(s_image, t_text[:, s]) + nce(s_text[:, s], t_image)) / 2 for s in range(k)) / k
    assert out["icl"].item() == pytest.approx(want, rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["clip_loss"].item() + want, rel=1e-5)


@pytest.mark.parametrize("tau", [None, 3.0, 0.5])
def test_token_kl_against_a_loop_at_temperatures_where_tau_squared_is_not_2_tau(tau: float | None) -> None:
    """τ² · mean KL(p_t ‖ p_s) of the softened distributions; τ = 3 and ½ tell τ² from 2τ (τ = 2 does not), and
    the default is τ = 1."""
    from compt.lm.losses import token_kl_loss

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    temp = 1.0 if tau is None else tau
    want = 0.0
    for b in range(2):
        for i in range(3):
            p, q = (t[b, i] / temp).softmax(-1), (s[b, i] / temp).softmax(-1)
            want += temp * temp * float((p * (p.log() - q.log())).sum()) / 6
    got = token_kl_loss(s, t) if tau is None else token_kl_loss(s, t, tau)
    assert got.item() == pytest.approx(want, rel=1e-5)


# ----------------------------------------------------------------------------------------------- fingerprint
def test_the_data_fingerprint_covers_the_held_out_eval_path(tmp_path: Path) -> None:
    from compt.clip.paradigm import ClipData
    from compt.datafp import data_changes

    (tmp_path / "train").mkdir()
    (tmp_path / "held").mkdir()
    train, held = tmp_path / "train/pairs.csv", tmp_path / "held/pairs.csv"
    train.write_text('filepath,caption\n"a.png","a red square"\n')
    held.write_text('filepath,caption\n"b.png","a blue circle"\n')
    raw = {"name": "fp", "data": {"kind": "csv", "path": str(train), "eval_path": str(held)},
           "chain": [{"model": "test/A", "epochs": 1}]}
    before = ClipData(config_from_dict(raw)).fingerprint()
    assert set(before) == {str(train), str(held)} and all(len(v[1]) == 64 for v in before.values())
    held.write_text(held.read_text().replace("blue", "pink"))          # held-out captions edited, same size
    after = ClipData(config_from_dict(raw)).fingerprint()
    assert data_changes(before, after) == [f"{held} was edited"]
    no_eval = ClipData(config_from_dict(raw | {"data": {**raw["data"], "eval_path": ""}})).fingerprint()
    assert set(no_eval) == {str(train)}


def test_held_out_and_training_folders_with_the_same_file_names_both_count(tmp_path: Path) -> None:
    """Folders of shards with the same names for training and held-out data: an edit of either is a change."""
    from compt.clip.paradigm import ClipData
    from compt.datafp import data_changes

    for split in ("train", "held"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "000.tar").write_bytes(b"x" * 10)
    raw = {"name": "fp", "data": {"kind": "wds", "path": str(tmp_path / "train"), "eval_path": str(tmp_path / "held")},
           "chain": [{"model": "test/A", "epochs": 1}]}
    before = ClipData(config_from_dict(raw)).fingerprint()
    assert set(before) == {"000.tar", "eval_path:000.tar"}
    (tmp_path / "held/000.tar").write_bytes(b"x" * 11)
    after = ClipData(config_from_dict(raw)).fingerprint()
    assert data_changes(before, after) == ["eval_path:000.tar changed size (10 -> 11 bytes)"]


def test_fingerprint_hashes_up_to_64_mib_and_names_a_size_change(tmp_path: Path, monkeypatch) -> None:
    from compt import datafp

    assert datafp.HASHED_BYTES == 64 * 2**20                           # the documented limit
    monkeypatch.setattr(datafp, "HASHED_BYTES", 10)
    (tmp_path / "at.txt").write_text("0123456789")                      # exactly the limit: hashed
    (tmp_path / "over.txt").write_text("0123456789a")                   # one byte over: size only
    before = datafp.files_fingerprint(tmp_path.iterdir(), tmp_path, hashed=(".txt",))
    assert len(before["at.txt"][1]) == 64 and before["over.txt"] == [11, ""]
    (tmp_path / "at.txt").write_text("012345678")
    after = datafp.files_fingerprint(tmp_path.iterdir(), tmp_path, hashed=(".txt",))
    assert datafp.data_changes(before, after) == ["at.txt changed size (10 -> 9 bytes)"]


# ----------------------------------------------------------------------------------------------- teacher cache
def _teacher(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("test/B").eval()


def _fill(teacher: torch.nn.Module, folder: Path | None, *, reuse: bool, captions: int = 2):
    return teacher_cache.fill_teacher_cache(teacher, ToyPairs(10, captions=captions), captions=captions,
                                            embed_dim=16, batch_size=4, info=DistInfo(), mmap_dir=folder, reuse=reuse)


def test_a_cache_folder_is_mapped_again_only_for_a_resume_of_the_same_shapes(tmp_path: Path) -> None:
    """A complete fill by teacher 1 lies in the folder. Teacher 2 with reuse = False (a fresh stage) computes its
    own rows; with reuse = True (a resume) the recorded rows are mapped; other shapes, or a fill without its
    completion record, are filled afresh."""
    folder = tmp_path / "cache"
    one, two = _teacher(1), _teacher(2)
    ref_one, ref_two = _fill(one, None, reuse=False), _fill(two, None, reuse=False)
    assert not torch.equal(ref_one.image, ref_two.image)
    _fill(one, folder, reuse=False)
    fresh = _fill(two, folder, reuse=False)
    assert torch.equal(fresh.image, ref_two.image) and torch.equal(fresh.text, ref_two.text)
    _fill(one, folder, reuse=False)
    resumed = _fill(two, folder, reuse=True)
    assert torch.equal(resumed.image, ref_one.image) and torch.equal(resumed.text, ref_one.text)
    one_caption = _fill(two, folder, reuse=True, captions=1)          # the record says 2 captions
    assert torch.equal(one_caption.image, ref_two.image) and one_caption.text.shape == (10, 1, 16)
    _fill(one, folder, reuse=False)
    (folder / "node0.done.json").unlink()
    assert torch.equal(_fill(two, folder, reuse=True).image, ref_two.image)


def _two_rank_gather(monkeypatch, teacher: torch.nn.Module, data, rank: int, world: int = 2) -> None:
    """Simulate `world` ranks' all-gather for rank `rank`'s fill: the other ranks' batches are encoded here."""
    import math

    from compt import distributed

    n, chunk = len(data), math.ceil(len(data) / world)
    subsets = {r: torch.utils.data.Subset(data, range(r * chunk, min(n, r * chunk + chunk))) for r in range(world)}
    others = {r: iter(torch.utils.data.DataLoader(subsets[r], batch_size=3)) for r in range(world) if r != rank}
    stash: dict[int, torch.Tensor] = {}

    def gather(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:   # image rows: encode the other ranks' batches now, keep their text rows for the next call
            for r, it in others.items():
                img, stash[r] = teacher_cache._encode_padded(teacher, next(it, None), len(x), 2, 16, DistInfo(),
                                                            "auto")
                stash[-1 - r] = img
            return torch.cat([x if r == rank else stash[-1 - r] for r in range(world)])
        return torch.cat([x if r == rank else stash[r] for r in range(world)])

    monkeypatch.setattr(distributed, "gather_no_grad", gather)


@pytest.mark.parametrize("rank", [0, 1])
def test_a_fill_split_over_two_ranks_puts_every_row_in_its_place(rank: int, monkeypatch) -> None:
    """9 samples on 2 ranks in batches of 3: rank 0 encodes 0–4, rank 1 encodes 5–8 (its last batch padded); each
    rank keeps its own copy (no folder). Either rank's cache equals a one-rank fill."""
    teacher, data = _teacher(3), ToyPairs(9, captions=2)
    want = teacher_cache.fill_teacher_cache(teacher, data, captions=2, embed_dim=16, batch_size=3, info=DistInfo())
    _two_rank_gather(monkeypatch, teacher, data, rank)
    got = teacher_cache.fill_teacher_cache(teacher, data, captions=2, embed_dim=16, batch_size=3,
                                           info=DistInfo(rank=rank, world_size=2, local_rank=rank))
    torch.testing.assert_close(got.image.float(), want.image.float(), atol=1e-2, rtol=0)
    torch.testing.assert_close(got.text.float(), want.text.float(), atol=1e-2, rtol=0)
    assert got.image.float().abs().sum(1).min() > 0.5                    # no row left at zero
    assert len(got.attach(data)) == 9 and torch.equal(got.attach(data)[4][3], got.image[4])


def test_a_second_local_rank_maps_the_writers_files(tmp_path: Path, monkeypatch) -> None:
    """Local rank 1 of a node does not write: after the fill it maps the files local rank 0 wrote (here: written
    beforehand), never recreating them."""
    teacher, data, folder = _teacher(3), ToyPairs(9, captions=2), tmp_path / "cache"
    want = teacher_cache.fill_teacher_cache(teacher, data, captions=2, embed_dim=16, batch_size=3, info=DistInfo(),
                                            mmap_dir=folder)
    _two_rank_gather(monkeypatch, teacher, data, 1)
    got = teacher_cache.fill_teacher_cache(teacher, data, captions=2, embed_dim=16, batch_size=3,
                                           info=DistInfo(rank=1, world_size=2, local_rank=1), mmap_dir=folder)
    assert torch.equal(got.image, want.image) and torch.equal(got.text, want.text)
    assert (folder / "node0.done.json").is_file()


KW = {"model": "test/C", "teacher": "test/B", "distill": "fd", "epochs": 2, "teacher_cache": True,
      "teacher_cache_mem_gb": 0.0, "ckpt_every_steps": 1}


def _counting_fills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    encode = teacher_cache._encode_padded
    monkeypatch.setattr(teacher_cache, "_encode_padded", lambda *a, **kw: calls.append(1) or encode(*a, **kw))
    return calls


def test_runs_sharing_a_teacher_cache_dir_never_share_a_cache(tmp_path: Path, monkeypatch) -> None:
    """Run a (seed 0) is killed after step 3: its complete cache stays, keyed by its stage folder's path. Run b
    (seed 1, its own teacher) with the same stage folder name and the same teacher_cache_dir fills its own; and
    run a started afresh (its last.pt gone) fills again instead of trusting the files."""
    local = str(tmp_path / "local")
    a, b = tmp_path / "a" / "stage", tmp_path / "b" / "stage"
    folder_a = teacher_cache_folder(TrainConfig(teacher_cache_dir=local), a)
    folder_b = teacher_cache_folder(TrainConfig(teacher_cache_dir=local), b)
    assert folder_a != folder_b and folder_a.parent == folder_b.parent == Path(local)
    assert folder_a == teacher_cache_folder(TrainConfig(teacher_cache_dir=local), Path("x/..") / a)

    def crash(step: int) -> None:
        if step == 3:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train_stage(**stage_kwargs(a, teacher_cache_dir=local, **KW), on_step=crash)
    left = {p.name: p.read_bytes() for p in folder_a.iterdir()}
    assert sorted(left) == ["node0.done.json", "node0.image.bf16", "node0.text.bf16"]
    fills = _counting_fills(monkeypatch)
    train_stage(**stage_kwargs(b, seed=1, teacher_cache_dir=local, **KW))
    assert len(fills) == 4                                           # 64 samples in batches of 16
    assert {p.name: p.read_bytes() for p in folder_a.iterdir()} == left and not folder_b.exists()
    (a / "last.pt").unlink()
    train_stage(**stage_kwargs(a, teacher_cache_dir=local, **KW))
    assert len(fills) == 8


# ----------------------------------------------------------------------------------------------- checkpoints
def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    """The second write dies half-way (disk full, then an interrupt): last.pt still holds the first checkpoint,
    byte for byte, and no temp file is left."""
    cfg = get_model_config("test/A")
    path = ck.save_checkpoint(tmp_path / "last.pt", state_dict={"w": torch.arange(4.0)}, model_config=cfg,
                              lineage={"stage": 1})
    before = path.read_bytes()
    real_save = torch.save

    for error in (RuntimeError("file write failed"), KeyboardInterrupt()):
        def half_written(obj, f, *a, error=error, **kw):
            real_save({"w": torch.zeros(1000)}, f)
            raise error

        monkeypatch.setattr(ck.torch, "save", half_written)
        with pytest.raises(UserError if isinstance(error, RuntimeError) else KeyboardInterrupt):
            ck.save_checkpoint(path, state_dict={"w": torch.ones(4)}, model_config=cfg, lineage={"stage": 2})
        monkeypatch.setattr(ck.torch, "save", real_save)
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    got = ck.load_checkpoint(path)
    assert torch.equal(got.state_dict["w"], torch.arange(4.0)) and got.lineage == {"stage": 1}


def test_an_atomic_write_gets_the_usual_file_mode(tmp_path: Path) -> None:
    """mkstemp creates 0600; the written file gets 0666 minus the umask, as open() would give it."""
    import os
    import stat

    old = os.umask(0o027)
    try:
        path = ck.atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        assert os.umask(old) == 0o027                                   # the process's umask is left as it was
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == '{\n  "x": 1\n}'


@pytest.mark.parametrize("payload", [{}, {"w": [1.0, 2.0]}, {"state_dict": {"w": torch.ones(1), "n": 3}}])
def test_a_file_without_a_state_dict_of_tensors_is_refused(tmp_path: Path, payload: dict) -> None:
    torch.save(payload, tmp_path / "x.pt")
    with pytest.raises(UserError, match="holds no state dict of tensors"):
        ck.load_checkpoint(tmp_path / "x.pt")
