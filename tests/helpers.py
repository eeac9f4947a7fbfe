"""Shared test fixtures: a tiny in-memory image–caption dataset following compt's dataset contract.

Items are ``(image (3, H, W) float, tokens (K, ctx) long, index int)``; ``deterministic`` says whether an
index always yields the same item (what the teacher cache relies on).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

SOT, EOT = 49406, 49407  # open_clip's start/end tokens; EOT has the largest id (argmax pooling)


class ToyPairs(Dataset):
    """`n` pairs in `classes` groups: image = class pattern + noise, captions = class words + noise words."""

    def __init__(self, n: int = 64, *, image_size: int = 16, context: int = 16, captions: int = 1,
                 classes: int = 8, seed: int = 0, deterministic: bool = True) -> None:
        g = torch.Generator().manual_seed(seed)
        patterns = torch.randn(classes, 3, image_size, image_size, generator=g)
        self.labels = torch.arange(n) % classes
        self.images = patterns[self.labels] + 0.5 * torch.randn(n, 3, image_size, image_size, generator=g)
        words = torch.randint(1, 400, (classes, 3), generator=g)
        self.tokens = torch.zeros(n, captions, context, dtype=torch.long)
        for i in range(n):
            for k in range(captions):
                noise = torch.randint(1, 400, (2,), generator=g)
                seq = torch.cat([torch.tensor([SOT]), words[self.labels[i]], noise, torch.tensor([EOT])])
                self.tokens[i, k, :len(seq)] = seq
        self.deterministic = deterministic

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.images[i], self.tokens[i], i


def stage_kwargs(out_dir, *, model: str = "test/A", epochs: float = 2, seed: int = 0, dataset: Dataset | None = None,
                 teacher: str | None = None, distill: str = "fd", member: dict | None = None,
                 from_scratch: bool | None = None, **train) -> dict:
    """Keyword arguments of a tiny `train_stage(spec, ...)` call (64 samples, batch 16, warmup 2, log every step).

    The student init is seeded (`seed`); a `teacher` name adds a seeded random teacher of that size (and makes
    the stage a grown one unless `from_scratch`). K captions are the dataset's (``k``, else its first item's).
    """
    from compt.clip.models import create_model, get_model_config
    from compt.config import TrainConfig
    from compt.paradigm import paradigm_of
    from compt.stage import resolve_spec

    torch.manual_seed(seed)
    init = create_model(model).state_dict()
    data = dataset if dataset is not None else ToyPairs(64, captions=2)
    parent = None
    if teacher is not None:
        torch.manual_seed(seed + 1)
        parent = (get_model_config(teacher), create_model(teacher).state_dict())
    captions = data.k if isinstance(getattr(data, "k", None), int) else None   # a stream cannot be indexed
    if captions is None:
        tokens = data[0][1]   # (K, ctx), or (ctx,) for one caption
        captions = int(tokens.shape[0]) if tokens.ndim == 2 else 1
    spec = resolve_spec(model=get_model_config(model), parent=parent[0] if parent else None, samples=len(data),
                        from_scratch=teacher is None if from_scratch is None else from_scratch, captions=captions,
                        member=paradigm_of(model).member_options(model=model, epochs=epochs, distill=distill,
                                                                 **(member or {})),
                        train=TrainConfig(**{"batch_size": 16, "warmup_steps": 2, "stage_warmup_steps": 2,
                                             "log_every_steps": 1, **train}))
    return {"spec": spec, "out_dir": out_dir, "init_state": init, "dataset": data, "progress": False,
            "teacher_state": parent[1] if parent and spec.distills else None}


def read_metrics(out_dir, kind: str = "train") -> list[dict]:
    """metrics.jsonl records of one kind, without the wall-clock dependent fields."""
    import json
    from pathlib import Path

    from compt.train.metrics import TIMING_KEYS

    lines = [json.loads(x) for x in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in lines if r["kind"] == kind]


def final_weights(out_dir) -> dict[str, torch.Tensor]:
    from pathlib import Path

    return torch.load(Path(out_dir) / "final.pt", weights_only=True)["state_dict"]


def toy_evaluate(n: int = 16):
    """An `evaluate` callable for `train_stage`: retrieval on `n` held-out toy pairs through
    `compt.clip.evaluation.evaluate` (encode_image / encode_text), plus a continuous image and text feature sum."""
    from compt.clip.evaluation import evaluate
    from compt.clip.evaluation.suite import EvalSuite, RetrievalSet

    data = ToyPairs(n, captions=1, seed=7)
    images = torch.utils.data.TensorDataset(data.images)
    suite = EvalSuite(name="toy", context_length=data.tokens.shape[-1],
                      retrieval=RetrievalSet(images=images, tokens=data.tokens[:, 0], text_to_image=torch.arange(n)))

    def run(model: torch.nn.Module) -> dict[str, float]:
        out = evaluate(model, suite, batch_size=8)
        out["image_sum"] = float(model.encode_image(data.images[:4], normalize=True).float()[:, :4].sum())
        out["text_sum"] = float(model.encode_text(data.tokens[:4, 0], normalize=True).float()[:, :4].sum())
        return out

    return run


class StepLog:
    """The optimizer steps this process takes, as (model, step before the step) pairs, read from the trainer
    (`compt.train.trainer._optimizer_step`): a resumed stage's first entry is its checkpoint's step, a silent
    restart's is 0 — what bit-identical end states alone cannot tell apart."""

    def __init__(self, monkeypatch) -> None:
        from compt.train import trainer

        self.steps: list[tuple[str, int]] = []
        real = trainer._optimizer_step

        def logged(st, micro_batches):
            self.steps.append((st.spec.model.name, st.progress.step))
            return real(st, micro_batches)

        monkeypatch.setattr(trainer, "_optimizer_step", logged)

    def of(self, model: str) -> list[int]:
        return [s for m, s in self.steps if m == model]


def assert_resumed(log: StepLog, model: str, step: int, total: int, console: str) -> None:
    """The stage of `model` started again at `step` of `total` (not at 0), took only the steps left, and said
    so on the console."""
    taken = log.of(model)
    assert taken[:1] == [step], f"{model} restarted at step {taken[:1]} instead of resuming at {step}"
    assert taken == list(range(step, total)), f"{model} took steps {taken[:3]}… not {step}…{total - 1}"
    assert f"({model}) at step {step} of {total}" in console, console[-500:]


def crash_after_step(monkeypatch, model: str, step: int, message: str = "killed") -> None:
    """Make the trainer raise RuntimeError(`message`) right after optimizer step `step` of `model`'s stage
    (what was due at that step — log, checkpoint, evaluation — is done first); `monkeypatch.undo()` or a
    fresh fixture lifts it."""
    from compt.train import trainer

    real = trainer._after_step

    def crash(st, *a):
        real(st, *a)
        if st.spec.model.name == model and st.progress.step == step:
            raise RuntimeError(message)

    monkeypatch.setattr(trainer, "_after_step", crash)


def assert_same_finals(run: Path, reference: Path) -> None:
    """Every chain stage of `run` ends with the same final weights as in `reference`, bit for bit."""
    from compt.checkpoint import load_checkpoint

    stages = sorted(p.parent.name for p in reference.glob("chain/*/final.pt"))
    assert stages and stages == sorted(p.parent.name for p in run.glob("chain/*/final.pt"))
    for stage in stages:
        got = load_checkpoint(run / "chain" / stage / "final.pt").state_dict
        want = load_checkpoint(reference / "chain" / stage / "final.pt").state_dict
        assert all(torch.equal(got[k], want[k]) for k in want), stage


def csv_of_pngs(folder: Path, n: int = 60) -> Path:
    """``folder/train.csv`` (filepath, caption) of `n` 24×20 PNGs in ``folder/img``: image i is colour i % 4 with
    noise, its caption names the colour and the row."""
    import numpy as np
    from PIL import Image

    (folder / "img").mkdir(parents=True, exist_ok=True)
    colours = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 220, 40)]
    rows = ["filepath,caption"]
    for i in range(n):
        noise = np.random.default_rng(i).normal(0, 10, (20, 24, 3))
        Image.fromarray(np.clip(np.array(colours[i % 4]) + noise, 0, 255).astype(np.uint8)).save(
            folder / "img" / f"img{i:03d}.png")
        rows.append(f'"img/img{i:03d}.png","a colour {i % 4} square number {i}"')
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    return folder / "train.csv"


def csv_stopping_run(path: Path, member: dict, **run) -> dict:
    """A raw run config: test/A → test/B on the CSV `path` (`csv_of_pngs`: 8 held out, 8 validation, 44 training
    samples, batch 8); `member` is added to member 2 (e.g. its target)."""
    return {"name": "csv-stop", "baseline_epochs": 2, **run,
            "data": {"kind": "csv", "path": str(path), "eval_samples": 8, "probe_samples": 0},
            "train": {"batch_size": 8, "warmup_steps": 2, "stage_warmup_steps": 1, "loader_workers": 0,
                      "log_every_steps": 4},
            "chain": [{"model": "test/A", "epochs": 2}, {"model": "test/B", "epochs": 3, **member}]}


def trained_like(cfg, seed: int = 0) -> dict[str, torch.Tensor]:
    """A language-model parent that is not at its init: perturbed weights and non-constant RMSNorm gains."""
    from compt.lm.models import build_lm

    torch.manual_seed(seed)
    model = build_lm(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.3 if p.dim() == 1 else 0.05))
    return model.state_dict()


def kill_in_probe(monkeypatch, step: int, calls: list[int] | None = None) -> None:
    """Make the trainer's stopping probe at `step` raise RuntimeError("killed in the probe") (the probes it reaches
    appended to `calls`); `monkeypatch.undo()` restores it."""
    from compt.train import trainer

    real = trainer._record_probe

    def killed(st, at, end):
        if calls is not None:
            calls.append(at)
        if at == step:
            raise RuntimeError("killed in the probe")
        return real(st, at, end)

    monkeypatch.setattr(trainer, "_record_probe", killed)



def untimed(stopping: dict) -> dict:
    """A stage's ``stopping`` record without its probes' wall clocks (the one part a resumed run cannot repeat);
    asserts every probe has one, non-decreasing along the stage."""
    walls = [p["wall_s"] for p in stopping["probes"]]
    assert walls == sorted(walls) and all(w >= 0 for w in walls)
    return {**stopping, "probes": [_no_wall(p) for p in stopping["probes"]], "stopped": _no_wall(stopping["stopped"])}


def _no_wall(probe: dict) -> dict:
    from compt.train.metrics import TIMING_KEYS

    return {k: v for k, v in probe.items() if k not in TIMING_KEYS}
