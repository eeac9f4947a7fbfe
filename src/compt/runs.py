"""What a run directory holds, read once: per-stage rows of the chain and the baselines (`load_run`).

Rows come from each finished stage's result (`compt.train.load_result`) in the folders `compt.chain`
assigns; growth time comes from the stage's lineage.json. Used by `compt.report` and `compt.plots`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compt.chain import baseline_dir, plan_stages
from compt.config import RunConfig, read_run_config
from compt.errors import UserError
from compt.parity import resolve_parity
from compt.plan import plan_chain
from compt.train import load_result
from compt.train.conditions import contention


def metrics_for(cfg: RunConfig) -> tuple[tuple[str, str], ...]:
    """The headline metrics (key, label) of `cfg`'s runs: its paradigm's (`compt.paradigm.Metric`)."""
    return tuple((m.key, m.label) for m in cfg.paradigm.metrics)


@dataclass
class StageRow:
    model: str
    method: str                  # "chain" | "individual"
    epochs: float
    flops: float                 # training FLOPs of this stage
    cumulative_flops: float      # chain: FLOPs to obtain this member (stages 1..i); individual: = flops
    wall_s: float
    metrics: dict[str, float]
    history: list[dict] = field(default_factory=list)
    conditions: dict[str, Any] | None = None   # of the wall clock (`compt.train.conditions`); None = not recorded
    diagnostics: dict[str, float] = field(default_factory=dict)   # grown stages: distance from the parent
    stopping: dict[str, Any] = field(default_factory=dict)        # stopping stages (`compt.train.stopping.summary`)
    validation: dict[str, float] = field(default_factory=dict)    # a baseline's metrics on the validation split, when
                                                                  # a member stopping at it had them computed

    @property
    def label(self) -> str:
        return f"{self.model} {self.method}"

    def wall_status(self) -> str:
        """clean | contended | not recorded (results written before compt recorded the conditions)."""
        if not self.conditions:
            return "not recorded"
        return "contended" if contention(self.conditions) else "clean"


@dataclass
class RunSummary:
    name: str
    run_dir: str
    chain: list[StageRow]
    individual: list[StageRow | None]
    cfg: RunConfig
    baseline_seeds: list[list[StageRow | None]] = field(default_factory=list)  # per member, its baseline on every
                                                    # parity seed (`compt.parity`; the first is `individual`'s)

    @property
    def chain_flops(self) -> float:
        return sum(r.flops for r in self.chain)

    @property
    def chain_wall(self) -> float:
        return sum(r.wall_s for r in self.chain)

    def individual_flops(self) -> list[float]:
        """Counted FLOPs of each baseline; the planner's analytic figure where a baseline was not run."""
        planned = plan_chain(self.cfg).members if None in self.individual else []
        return [r.flops if r else planned[i].individual_cost for i, r in enumerate(self.individual)]


def _load_result(path: Path) -> dict[str, Any] | None:
    """A finished stage's result plus the growth time recorded in its lineage.json (None: not done)."""
    result = load_result(path, weights=False)   # reports also read run summaries kept without checkpoints
    if result is None:
        return None
    raw = json.loads((path / "result.json").read_text())
    final, recorded = path / "final.pt", raw.get("final_pt") or {}
    if recorded and final.is_file() and final.stat().st_size != recorded.get("size"):  # size: cheap
        print(f"compt report: warning: {final} has {final.stat().st_size} bytes, {recorded.get('size')} were "
              f"written — the checkpoint is damaged (the metrics shown are the recorded ones); `compt train` "
              f"on this run directory rebuilds it", file=sys.stderr)
    lineage = path / "lineage.json"
    grow_s = json.loads(lineage.read_text()).get("grow_s", 0.0) if lineage.is_file() else 0.0
    return {**result.to_dict(), "grow_s": grow_s, "validation": raw.get("validation") or {}}


def _row(res: dict[str, Any], model: str, method: str, epochs: float, offset: float) -> StageRow:
    """A stage's row; a stopping stage's epochs are those of the trajectory that made its final model."""
    flops, stopping = float(res["train_flops"]), res.get("stopping") or {}
    epochs = float(stopping["stopped"]["epoch"]) if stopping.get("stopped") else epochs
    return StageRow(model=model, method=method, epochs=epochs, flops=flops, cumulative_flops=offset + flops,
                    wall_s=float(res["wall_clock_s"]) + float(res.get("grow_s", 0.0)),
                    metrics={k: float(v) for k, v in res.get("metrics", {}).items()},
                    history=res.get("history", []), conditions=res.get("conditions") or None,
                    diagnostics={k: float(v) for k, v in (res.get("diagnostics") or {}).items()}, stopping=stopping,
                    validation={k: float(v) for k, v in res.get("validation", {}).items()})


def load_run(run_dir: str | Path) -> RunSummary:
    """Read a run directory; missing stages are reported as not run."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    chain, total = [], 0.0
    for stage in plan_stages(cfg, baselines=False):
        res = _load_result(run_dir / stage.directory)
        if res is None:
            break
        chain.append(_row(res, stage.member.model, "chain", stage.member.epochs, total))
        total += chain[-1].flops
    seeds = []
    for i, m in enumerate(cfg.chain):
        results = [_load_result(run_dir / baseline_dir(cfg, i, seed)) for seed in resolve_parity(cfg).seeds]
        seeds.append([_row(res, m.model, "individual", cfg.individual_epochs, 0.0) if res else None
                      for res in results])
    if not chain:
        raise UserError(f"{run_dir}: no finished stage yet")
    return RunSummary(name=cfg.name, run_dir=str(run_dir), chain=chain, individual=[rows[0] for rows in seeds],
                      cfg=cfg, baseline_seeds=seeds)
