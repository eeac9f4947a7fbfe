"""One core, paradigms as adapters: a third paradigm defined here trains as a chain without any core change,
and the core's import graph names no paradigm.

The toy paradigm: a two-layer MLP ``y = W2 · relu(W1 · x + b1) + b2`` on a synthetic regression, grown in
width by zero-output new hidden units (exact: the child computes the parent's function at step 0), distilled
by the MSE to the frozen parent's output, evaluated by held-out MSE (lower is better).
"""

from __future__ import annotations

import ast
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import crash_after_step
from torch import Tensor, nn
from torch.utils.data import Dataset

from compt import paradigm as registry
from compt.checkpoint import load_checkpoint
from compt.config import config_from_dict, validate
from compt.errors import UserError
from compt.paradigm import ChainRules, Metric
from compt.paradigm_base import ParadigmBase, RunDataBase

SRC = Path(__file__).resolve().parents[1] / "src" / "compt"
IN, OUT = 4, 2


@dataclass(frozen=True, kw_only=True)
class MLPConfig:
    name: str
    hidden: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SIZES = {f"toy/mlp-{h}": MLPConfig(name=f"toy/mlp-{h}", hidden=h) for h in (4, 8, 16)}


def mlp(cfg: MLPConfig) -> nn.Module:
    return nn.Sequential(nn.Linear(IN, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, OUT))


def grow_width(parent: dict[str, Tensor], pc: MLPConfig, cc: MLPConfig, seed: int) -> dict[str, Tensor]:
    """Parent units first, fresh input weights for the new units, zero output weights: f_child = f_parent."""
    g = torch.Generator().manual_seed(seed)
    new = cc.hidden - pc.hidden
    assert parent["0.weight"].shape == (pc.hidden, IN) and parent["2.weight"].shape == (OUT, pc.hidden)
    child = {"0.weight": torch.cat([parent["0.weight"], 0.5 * torch.randn(new, IN, generator=g)]),
             "0.bias": torch.cat([parent["0.bias"], torch.zeros(new)]),
             "2.weight": torch.cat([parent["2.weight"], torch.zeros(OUT, new)], dim=1),
             "2.bias": parent["2.bias"].clone()}
    assert child["0.weight"].shape == (cc.hidden, IN) and child["2.weight"].shape == (OUT, cc.hidden)
    return child


class Regression(Dataset):
    """y = sin(x · A) for x ~ N(0, 1): items (x (IN,), y (OUT,), index)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(IN, OUT, generator=torch.Generator().manual_seed(99))
        self.x = torch.randn(n, IN, generator=g)
        self.y = torch.sin(self.x @ a)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        return self.x[i], self.y[i], i


class ToyTask(nn.Module):
    """MSE to the targets, plus α · s(t) · MSE to the frozen teacher's outputs when it has one."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, weight: float) -> None:
        super().__init__()
        self.student, self.teacher, self.weight, self.weight_scale = student, teacher, weight, 1.0

    def forward(self, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        pred = self.student(x)
        task = nn.functional.mse_loss(pred, y)
        if self.teacher is None:
            return {"loss": task, "mse": task.detach()}
        with torch.no_grad():
            target = self.teacher(x)
        distill = nn.functional.mse_loss(pred, target)
        return {"loss": task + self.weight_scale * self.weight * distill, "mse": task.detach(),
                "distill": distill.detach()}

    def post_step(self) -> None:
        pass

    def extra_state(self) -> dict[str, Tensor]:
        return {}

    def load_extra_state(self, state: dict[str, Tensor]) -> None:
        assert not state


class ToyData(RunDataBase):
    """Training and held-out sets, a validation split and representations; no files to fingerprint (the defaults)."""

    def __init__(self, cfg: Any) -> None:
        self.train, self.held = Regression(cfg.data.num_samples, 0), Regression(64, 1)

    def train_set(self, model_cfg: MLPConfig) -> Dataset:
        return self.train

    def evaluator(self, model_cfg: MLPConfig) -> Any:
        def evaluate(model: nn.Module) -> dict[str, float]:
            with torch.no_grad():
                return {"val_mse": float(nn.functional.mse_loss(model(self.held.x), self.held.y))}
        return evaluate

    def validator(self, model_cfg: MLPConfig) -> Any:
        val = Regression(64, 2)

        def evaluate(model: nn.Module) -> dict[str, float]:
            with torch.no_grad():
                return {"val_mse": float(nn.functional.mse_loss(model(val.x), val.y))}
        return evaluate

    def representations(self, model: nn.Module, model_cfg: MLPConfig) -> dict[str, Tensor]:
        with torch.no_grad():
            return {"out": model(self.held.x)}

    def after_final(self, out_dir: Path, model_cfg: MLPConfig, weights: dict[str, Tensor]) -> None:
        (out_dir / "toy-export.json").write_text(json.dumps({"hidden": model_cfg.hidden}))


class ToyParadigm(ParadigmBase):
    """Only the required members (`compt.paradigm.REQUIRED`) and an export; the rest are the defaults."""

    name = "toy"
    label = "toy MLP"
    config_class = MLPConfig
    metrics = (Metric("val_mse", "held-out MSE", higher_is_better=False, digits=3),)
    default_distill = "mse"

    def owns(self, model: str) -> bool:
        return model in SIZES

    def model_names(self, family: str | None = None) -> list[str]:
        return list(SIZES)

    def member_config(self, model: str, objective: str | None) -> MLPConfig:
        return SIZES[model]

    def config_from_dict(self, raw: dict[str, Any]) -> MLPConfig:
        return MLPConfig(**raw)

    def config_to_dict(self, cfg: MLPConfig) -> dict[str, Any]:
        return cfg.to_dict()

    def build(self, cfg: MLPConfig) -> nn.Module:
        return mlp(cfg)

    def forward_flops(self, cfg: MLPConfig, captions: int) -> float:
        return 2.0 * (IN * cfg.hidden + cfg.hidden * OUT)

    def chain_rules(self, cfg: Any) -> ChainRules:
        cfgs = [SIZES[m.model] for m in cfg.chain]

        def check(a: MLPConfig, b: MLPConfig, op: str) -> None:
            if b.hidden < a.hidden:
                raise UserError(f"{b.name} is narrower than {a.name}")

        return ChainRules(configs=cfgs, flops=[self.forward_flops(c, 1) for c in cfgs],
                          growth_ops=("width", "none"), distill_losses=("mse", "none"), validate_growth=check,
                          patch_tokens=(False,) * len(cfgs))

    def grow(self, parent_state: dict[str, Tensor], parent_cfg: MLPConfig, child_cfg: MLPConfig, op: str,
             seed: int) -> dict[str, Tensor]:
        return grow_width(parent_state, parent_cfg, child_cfg, seed)

    def open_data(self, cfg: Any, run_dir: Path) -> ToyData:
        return ToyData(cfg)

    def build_task(self, student: nn.Module, spec: Any, teacher_state: dict[str, Tensor] | None, dataset: Dataset,
                   info: Any, out_dir: Path) -> tuple[nn.Module, bool]:
        teacher = None
        if spec.teacher is not None:
            teacher = self.create(spec.teacher, teacher_state).eval().requires_grad_(False)
        return ToyTask(student, teacher, spec.distill_weight), False

    def forward(self, task: nn.Module, batch: list[Tensor]) -> dict[str, Tensor]:
        return task(*batch)

    def export(self, ckpt: Any, out: Path, model_name: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        torch.save(ckpt.state_dict, out / "mlp.pt")

    def load_hint(self, folder: Path) -> str:
        return str(folder / "mlp.pt")


RAW = {"name": "toy", "baseline_epochs": 6, "baselines": True,
       "data": {"num_samples": 64},
       "train": {"batch_size": 16, "lr": 1e-2, "min_lr": 1e-4, "warmup_steps": 2, "stage_warmup_steps": 1,
                 "log_every_steps": 1, "loader_workers": 0},
       "chain": [{"model": "toy/mlp-4", "epochs": 6},
                 {"model": "toy/mlp-8", "epochs": 2, "growth": "width", "distill_weight": 0.5},
                 {"model": "toy/mlp-16", "epochs": 2, "growth": "width", "distill_weight": 0.5}]}


@pytest.fixture
def toy() -> Any:
    registry.register_paradigm(ToyParadigm())
    yield
    registry.unregister_paradigm("toy")


def test_a_third_paradigm_trains_as_a_chain_with_baselines_and_reports(toy: Any, tmp_path: Path, capsys) -> None:
    from compt.chain import train_run
    from compt.cli import main

    cfg = config_from_dict(RAW)
    validate(cfg)
    results = train_run(cfg, tmp_path, progress=False)
    assert list(results) == ["chain-1", "chain-2", "chain-3", "baseline-2", "baseline-3"]
    grown = load_checkpoint(tmp_path / "chain/02-toy_mlp-8/init.pt")
    parent = load_checkpoint(tmp_path / "chain/01-toy_mlp-4/final.pt")
    assert grown.paradigm == "toy" and grown.model_config == SIZES["toy/mlp-8"]
    x = torch.randn(5, IN)
    with torch.no_grad():  # width growth is exact: the grown member starts as its parent's function
        torch.testing.assert_close(ToyParadigm().create(SIZES["toy/mlp-8"], grown.state_dict)(x),
                                   ToyParadigm().create(SIZES["toy/mlp-4"], parent.state_dict)(x))
    untrained = ToyData(cfg).evaluator(None)(mlp(SIZES["toy/mlp-4"]))["val_mse"]
    assert results["chain-1"]["metrics"]["val_mse"] < untrained
    assert results["chain-2"]["metrics"]["train_distill"] >= 0  # the grown stage distilled from its parent
    diag = results["chain-2"]["diagnostics"]   # exact width growth: the parent's outputs at step 0
    assert diag["cka_out_start"] == pytest.approx(1.0) and diag["cka_out_end"] < 1.0 and diag["update_norm"] > 0
    assert (tmp_path / "chain/03-toy_mlp-16/toy-export.json").is_file()  # the paradigm's after_final ran
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "held-out MSE" in out and "toy/mlp-16" in out


def test_a_killed_toy_stage_resumes_where_it_stopped(toy: Any, tmp_path: Path, monkeypatch, capsys) -> None:
    from compt.chain import train_run

    cfg = config_from_dict(RAW | {"baselines": False})
    reference = train_run(cfg, tmp_path / "ref", progress=False)
    crash_after_step(monkeypatch, "toy/mlp-8", 6)
    with pytest.raises(RuntimeError, match="killed"):
        train_run(cfg, tmp_path / "run", progress=False)
    stage = tmp_path / "run/chain/02-toy_mlp-8"
    checkpointed = load_checkpoint(stage / "last.pt").train_state["progress"]["step"]
    assert checkpointed == 4  # the last epoch end before the crash
    monkeypatch.undo()
    capsys.readouterr()
    resumed = train_run(cfg, tmp_path / "run", progress=False)
    assert f"resuming chain-2 (toy/mlp-8) at step {checkpointed} of 8" in capsys.readouterr().err
    for key in reference:
        assert resumed[key]["metrics"] == reference[key]["metrics"]
    got = load_checkpoint(tmp_path / "run/chain/03-toy_mlp-16/final.pt").state_dict
    want = load_checkpoint(tmp_path / "ref/chain/03-toy_mlp-16/final.pt").state_dict
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_the_run_holds_its_paradigm_resolved_once(toy: Any, monkeypatch) -> None:
    import compt.config

    asked = []
    monkeypatch.setattr(compt.config, "paradigm_for_run",
                        lambda cfg: asked.append(cfg) or registry.paradigm_for_run(cfg))
    cfg = config_from_dict(RAW)
    validate(cfg)
    assert cfg.paradigm is cfg.paradigm is registry.paradigm_named("toy") and len(asked) == 1


def test_a_task_that_does_not_fit_the_contract_is_refused_naming_what_it_lacks(toy: Any, tmp_path: Path,
                                                                              monkeypatch) -> None:
    monkeypatch.setattr(ToyParadigm, "build_task", lambda self, student, *args: (nn.Linear(2, 2), False))
    with pytest.raises(TypeError, match="the toy paradigm's task Linear does not fit compt.tasks.Task: it lacks "
                                        "student, weight_scale, post_step, extra_state, load_extra_state$"):
        from compt.chain import train_run

        train_run(config_from_dict(RAW | {"baselines": False}), tmp_path, progress=False)


def test_a_chain_cannot_mix_paradigms() -> None:
    raw = {"name": "mix", "data": {"kind": "text"}, "chain": [{"model": "lm/test-A", "epochs": 1},
                                                             {"model": "tiny/ViT-S", "epochs": 1}]}
    with pytest.raises(UserError, match="cannot mix paradigms: lm/test-A \\(lm\\), tiny/ViT-S \\(clip\\)"):
        validate(config_from_dict(raw))



# ----------------------------------------------------------------------------------------------- registration
def fake_entry_points(monkeypatch, *values: tuple[str, str]) -> None:
    """Make `importlib.metadata.entry_points` list `values` ((name, "module:attr")) in group compt.paradigms, as
    an installed package's metadata would, and let the registry read them afresh."""
    import importlib.metadata

    eps = [importlib.metadata.EntryPoint(name, value, registry.ENTRY_POINTS) for name, value in values]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: eps if kw.get("group") == registry.ENTRY_POINTS else real(**kw))
    monkeypatch.setattr(registry, "_PLUGINS", [])


@pytest.fixture
def installed_toy(monkeypatch) -> Any:
    fake_entry_points(monkeypatch, ("toy", f"{__name__}:ToyParadigm"))
    yield
    registry.unregister_paradigm("toy")


def test_a_paradigm_installed_through_an_entry_point_is_found_by_model_and_listed(installed_toy: Any,
                                                                                  capsys) -> None:
    from compt.cli import main

    assert "toy" not in {p.name for p in registry.paradigms()}   # read only when a name is not found
    assert main(["models", "--family", "toy"]) == 0               # or when every paradigm is listed
    out = capsys.readouterr().out
    assert "toy/mlp-16" in out and "ViT" not in out
    assert registry.paradigm_of("toy/mlp-8").name == "toy"
    assert registry.paradigm_named("toy").label == "toy MLP"
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in listed["toy_models"]] == list(SIZES) and listed["families"]["toy"] == list(SIZES)
    assert listed["toy_models"][0]["gflops"] == pytest.approx(2 * (IN * 4 + 4 * OUT) / 1e9)
    assert main(["flops", "toy/mlp-8"]) == 0


def test_the_entry_points_are_not_read_for_built_in_names(monkeypatch) -> None:
    import importlib.metadata

    def refuse(**kw: Any) -> list[Any]:
        raise AssertionError("entry points read")

    monkeypatch.setattr(importlib.metadata, "entry_points", refuse)
    monkeypatch.setattr(registry, "_PLUGINS", [])
    assert registry.paradigm_of("lm/test-A").name == "lm" and registry.paradigm_named("clip").name == "clip"


@pytest.mark.parametrize(("value", "message"), [
    ("compt_no_such_package:PARADIGM", "entry point broken = 'compt_no_such_package:PARADIGM' .* failed to load: "
                                       "ModuleNotFoundError"),
    (f"{__name__}:SIZES", "entry point broken = .*: paradigm 'dict' cannot be registered: lacks name, label"),
])
def test_a_broken_entry_point_is_one_line_naming_it(monkeypatch, value: str, message: str) -> None:
    fake_entry_points(monkeypatch, ("broken", value))
    with pytest.raises(UserError, match=message) as err:
        registry.paradigm_of("toy/none")
    assert "\n" not in str(err.value)


class Incomplete(ParadigmBase):
    """A toy that forgot its growth and its model builder."""

    name, label, config_class, metrics, default_distill = "half", "half model", MLPConfig, ToyParadigm.metrics, "mse"
    owns, model_names, member_config = ToyParadigm.owns, ToyParadigm.model_names, ToyParadigm.member_config
    config_from_dict, config_to_dict = ToyParadigm.config_from_dict, ToyParadigm.config_to_dict
    forward_flops, chain_rules = ToyParadigm.forward_flops, ToyParadigm.chain_rules
    open_data, build_task, forward = ToyParadigm.open_data, ToyParadigm.build_task, ToyParadigm.forward


class Duck:
    """Every required member, no base class, so none of the optional ones."""

    name, label, config_class, metrics, default_distill = "duck", "duck", MLPConfig, ToyParadigm.metrics, "mse"


for _m in registry.REQUIRED[5:]:
    setattr(Duck, _m, getattr(ToyParadigm, _m))


def test_a_paradigm_that_does_not_conform_is_refused_in_one_line_naming_what_it_lacks() -> None:
    with pytest.raises(UserError, match=r"^paradigm 'half' cannot be registered: lacks build, grow$"):
        registry.register_paradigm(Incomplete())
    with pytest.raises(UserError, match=r"paradigm 'duck' cannot be registered: lacks families, create, .*"
                                        rf"{registry.OPTIONAL[-1]} \(subclass compt.paradigm_base.ParadigmBase"):
        registry.register_paradigm(Duck())
    bad = ToyParadigm()
    bad.metrics, bad.grow = (), None
    with pytest.raises(UserError, match="'toy' cannot be registered: grow is not callable; metrics must be a "
                                        "non-empty tuple"):
        registry.register_paradigm(bad)
    assert {"half", "duck", "toy"}.isdisjoint(p.name for p in registry.paradigms())
    assert not registry.conformance_problems(ToyParadigm())
    assert tuple(m for m in vars(ParadigmBase) if not m.startswith("_")) == registry.OPTIONAL   # one list, in sync


def test_the_defaults_of_the_base_class(toy: Any, tmp_path: Path) -> None:
    from compt.checkpoint import save_checkpoint

    p, cfg = ToyParadigm(), SIZES["toy/mlp-4"]
    assert p.families() == {"toy": tuple(SIZES)} and p.grown_config(cfg, "toy/mlp-8") == SIZES["toy/mlp-8"]
    assert p.objective(None) == "toy" and p.trains_as(cfg, 0.5) is cfg and p.block_types() == ()
    with pytest.raises(UserError, match="train.objective = 'siglip' is not an objective of toy MLPs"):
        p.objective("siglip")
    with pytest.raises(UserError, match="toy MLPs cannot be pruned"):
        p.prune({}, cfg, cfg, [], "cpu")
    state = mlp(cfg).state_dict()
    save_checkpoint(tmp_path / "a.pt", state_dict=state, model_config=cfg)
    assert all(torch.equal(p.load_init(tmp_path / "a.pt", cfg)[k], v) for k, v in state.items())
    with pytest.raises(UserError, match="is not a compt checkpoint of toy/mlp-8"):
        p.load_init(tmp_path / "a.pt", SIZES["toy/mlp-8"])
    with pytest.raises(UserError, match="weights do not fit model toy/mlp-8: .*size mismatch"):
        p.create(SIZES["toy/mlp-8"], state)
    data = RunDataBase()
    assert (data.fingerprint(), data.lineage(), data.representations(mlp(cfg), cfg)) == ({}, {}, {})
    with pytest.raises(UserError, match="this data has no validation split, which a stopping rule"):
        data.validator(cfg)
    assert ToyData(config_from_dict(RAW)).fingerprint() == {}

# ----------------------------------------------------------------------------------------------- import graph
PARADIGM_PACKAGES = ("compt.clip", "compt.lm")   # every CLIP module lives in compt.clip, every LM one in compt.lm
# the CLIP paradigm's modules that still live at the top level of the package (its adapter is compt.clip)
CORE = ("paradigm", "paradigm_base", "growth", "tasks", "config", "stage", "chain", "checkpoint", "costs", "plan",
        "runs", "report", "export", "distributed", "runlock", "threads", "errors", "train/trainer", "train/stage_loop",
        "train/loader", "train/optim", "train/sampler", "train/state", "train/metrics", "train/conditions",
        "train/stopping")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_paradigm(module: str) -> None:
    bad = [m for m in imported_modules(SRC / f"{module}.py")
           if m.startswith(PARADIGM_PACKAGES)]
    assert not bad, f"compt/{module}.py imports paradigm code: {bad}"


def test_no_module_outside_the_paradigms_asks_whether_a_model_is_a_language_model() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("lm/", "clip/")):
            continue
        text = path.read_text()
        offenders += [rel for word in ("LMConfig", "is_lm(", ".is_lm", "lm_config") if word in text]
    assert offenders == ["checkpoint.py"]  # which reads the lm_config key of older LM checkpoint files
