"""Cost model of a chain versus individual training (SPEC §5).

With F(m) the per-sample forward FLOPs of model m for one image and K captions (image + K × text) — for a
language model, one sequence of its context length (`compt.lm.flops`) — N training samples per epoch and
E epochs:

    individual(m)   = E_ind · N · 3·F(m)                     # forward + backward ≈ 3 × forward
    stage(m_1)      = E_1   · N · 3·F(m_1)                   # the first member trains from scratch
    stage(m_i), i>1 = E_i   · N · (3·F(m_i) + F(m_{i-1}))    # plus one teacher forward per sample
    chain           = Σ_i stage(m_i)
    reduction       = 1 − chain / max_i individual(m_i)      # versus training only the largest member
    acceleration    = Σ_i individual(m_i) / chain            # family-level speed-up

A down-chain (members pruned from their predecessor, ``growth = "prune"``, `compt.prune`) is priced by the same
formulas: its largest member is member 1, trained normally, and each pruned stage pays its own training plus the
larger predecessor's forward as the teacher; the one calibration forward of the pruning (≤ 1024 samples) is
left out, as growth is.

With member 1 from an init (``[[chain]] init``), stage(m_1) is its continued training only (0 when it is used as
it is); counting its training from scratch too, the acceleration is Σ_i individual(m_i) / (chain + individual(m_1)).

For a paradigm that counts tokens (language models: T = the context length per sample, P(m) the parameters),
each member's tokens and tokens per parameter, in its chain stage and trained alone:

    tokens(m_i)     = E_i · N · T,      tokens_alone(m_i) = E_ind · N · T,      ratio = tokens / P(m_i)

Compute-optimal training is about 20 tokens per parameter (Chinchilla, Hoffmann et al. 2022); growth's benefit
is reported to fade when members train far beyond it.

With the teacher-feature cache the teacher forward is paid once (one pass over the data) instead of
every epoch; `cached_teacher=True` plans that variant. Whether or not it is priced, every distilled stage
lists the size of its cache: one bf16 copy per node of N × (1 + K) × E_teacher values.

The baseline arm (`plan_baselines`), priced when baselines train on several seeds or under the time-to-target
protocol (`compt.parity`): every baseline stage the run trains (`compt.chain.plan_stages`; member 1's baseline on
the run's seed may be chain stage 1, priced in the chain), counted by steps as the trainer counts them::

    baseline(m, seed) = (T + Σ_k (L(s_k) − s_k)) · B · 3·F(m)     # T = ⌈E_ind · N / B⌉ steps, B the batch
    baselines         = Σ_m Σ_seed baseline(m, seed)

with the probe steps s_k and branch lengths L(s) of `compt.train.stopping` (time-to-target: a baseline never
stops, so every probe's branch is paid; baseline-curve: no probes). N is ``data.num_samples`` throughout; a run
that carves its validation split out of the training data trains on up to min(val_samples, N / 5) fewer.

Can the loader feed a member? Where the data path decodes each sample as it reads it
(`compt.paradigm.Paradigm.decodes_per_sample`), one rank's loader delivers about

    loader(rank)  = W / c                                  # W workers, c seconds per sample per worker
    needed(m)     = peak · MFU / (3·F(m) + F_teacher)      # samples/s one accelerator trains (F_t → 0 when cached)

and `feed_warnings` names every member with needed > loader, with its assumptions (`FeedAssumptions`:
c = 3 ms — a CC3M sample decoded, resized to 224 px and its 7 captions tokenised on one core, issue 31 —,
an H100's 989 TFLOP/s dense bf16 at 40 % MFU; W = ``train.loader_workers``, or `MAX_AUTO_WORKERS` for auto).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from compt.chain import individual_stage, plan_stages, stage_spec
from compt.config import RunConfig
from compt.costs import training_flops
from compt.paradigm import Paradigm, chain_rules, paradigm_named
from compt.parity import resolve_parity
from compt.stage import StageSpec
from compt.train import stopping
from compt.train.loader import MAX_AUTO_WORKERS


@dataclass(frozen=True)
class MemberCost:
    model: str
    epochs: float
    forward_flops: float        # per sample, K captions
    individual_cost: float      # FLOPs of training this member alone for the individual schedule
    stage_cost: float           # FLOPs of this member's chain stage (teacher included)
    cumulative_cost: float      # chain FLOPs up to and including this stage
    teacher_cache_bytes: int = 0  # host bytes per node of this stage's teacher cache (0: no distillation)
    sample_flops: float = 0.0     # training FLOPs of one sample of this stage (3·F + teacher forward unless cached)
    params: int = 0               # parameters (paradigms that count tokens; 0 otherwise)
    tokens: float = 0.0           # tokens its chain stage trains on: epochs · N · tokens per sample
    individual_tokens: float = 0.0  # tokens of its individual schedule


@dataclass(frozen=True)
class BaselineCost:
    """One member's baselines as the run trains them (module docstring)."""

    model: str
    seeds: tuple[int, ...]    # the train seeds of its baseline stages (the run's own left out when chain stage 1 is it)
    steps: int                # T: the steps of one seed's schedule
    probes: int               # probes per seed before the end of the schedule (0 under baseline-curve)
    probe_steps: int          # Σ_k (L(s_k) − s_k): one seed's cooldown-branch steps
    cost: float               # FLOPs of all its seeds, branches included


@dataclass(frozen=True)
class BaselinePlan:
    protocol: str             # `compt.parity.PROTOCOLS`
    seeds: int                # S: baseline seeds behind each target
    probe_every: float        # epochs between a baseline's probes (0: none)
    members: tuple[BaselineCost, ...]
    total: float              # Σ of the members' cost
    shared: str = ""          # the model whose baseline on the run's seed is chain stage 1 ("" if none)


@dataclass(frozen=True)
class ChainPlan:
    members: tuple[MemberCost, ...]
    samples: int
    captions: int
    individual_epochs: float
    chain_cost: float
    individual_total: float
    largest_individual: float
    reduction_vs_largest: float
    acceleration: float
    init: str = ""                          # member 1's starting checkpoint ("" = trained from scratch)
    acceleration_counting_init: float = 0.0  # with init: the acceleration if member 1 were trained alone first
    capped: tuple[str, ...] = ()             # members trained until a target: their epochs are a cap
    baselines: BaselinePlan | None = None    # the baseline arm on several seeds or under time-to-target
    sample_tokens: int = 0                   # tokens per sample (language models; 0: the paradigm counts none)
    notes: tuple[str, ...] = ()              # what resolving the members' configs changed (`ChainRules.notes`)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["members"] = [asdict(m) for m in self.members]
        return d


def _teacher_cache_bytes(spec: StageSpec, samples: int) -> int:
    """Per-node bytes of a stage's teacher cache (0: no teacher, or a paradigm that caches nothing)."""
    if spec.teacher is None:
        return 0
    return paradigm_named(spec.paradigm).teacher_cache_bytes(samples, spec.captions, spec.teacher)


def plan_chain(cfg: RunConfig, *, samples: int | None = None, cached_teacher: bool = False) -> ChainPlan:
    """Per-member and chain-level costs of `cfg` (FLOPs), following the formulas in the module docstring.

    Every stage is the `StageSpec` the trainer gets (`compt.chain.stage_spec`) and is priced with the
    trainer's own cost function (`compt.costs.training_flops`), over epochs · N samples.
    """
    n = samples if samples is not None else cfg.data.num_samples
    rules = chain_rules(cfg)
    members, cumulative = [], 0.0
    for stage in plan_stages(cfg, baselines=False):
        spec = stage_spec(cfg, stage, n)
        cost = training_flops(spec.student_flops, spec.teacher_flops, spec.epochs * n,
                              cached_teacher=cached_teacher, fill_samples=n)
        cumulative += cost
        alone = stage_spec(cfg, individual_stage(cfg, stage.index), n)
        individual = training_flops(alone.student_flops, 0.0, alone.epochs * n)
        cache = _teacher_cache_bytes(spec, n)
        per_sample = training_flops(spec.student_flops, spec.teacher_flops, 1, cached_teacher=cached_teacher)
        tokens = rules.sample_tokens[stage.index] if rules.sample_tokens else 0
        members.append(MemberCost(spec.model.name, spec.epochs, spec.student_flops, individual, cost, cumulative,
                                  cache, per_sample, params=rules.params[stage.index] if rules.params else 0,
                                  tokens=spec.epochs * n * tokens, individual_tokens=alone.epochs * n * tokens))
    individual_total = sum(m.individual_cost for m in members)
    largest = max(m.individual_cost for m in members)   # member 1 in a down-chain
    init = cfg.chain[0].init or ""
    counted = cumulative + members[0].individual_cost   # member 1 trained from scratch first, then continued
    return ChainPlan(members=tuple(members), samples=n, captions=cfg.data.caption_slots,
                     individual_epochs=cfg.individual_epochs, chain_cost=cumulative,
                     individual_total=individual_total, largest_individual=largest,
                     reduction_vs_largest=1.0 - cumulative / largest if largest else 0.0,
                     acceleration=individual_total / cumulative if cumulative else float("inf"), init=init,
                     acceleration_counting_init=individual_total / counted if init else 0.0,
                     capped=tuple(m.model for m in cfg.chain if m.until or m.target),
                     baselines=plan_baselines(cfg, n),
                     sample_tokens=rules.sample_tokens[0] if rules.sample_tokens else 0, notes=rules.notes)


def plan_baselines(cfg: RunConfig, samples: int) -> BaselinePlan | None:
    """The baseline arm of `cfg` on `samples` samples per epoch (module docstring); None unless baselines train on
    several seeds or under the time-to-target protocol."""
    parity = resolve_parity(cfg)
    if not cfg.baselines or not (parity.symmetric or len(parity.seeds) > 1):
        return None
    stages = [s for s in plan_stages(cfg, baselines=True) if s.kind == "baseline"]   # `individual_stage`s
    members = []
    for i, m in enumerate(cfg.chain):
        mine = [s for s in stages if s.index == i]
        priced = [_baseline_seed(stage_spec(cfg, s, samples)) for s in mine]
        steps, probes, branch, _ = priced[0]   # every seed trains the same schedule
        seeds = tuple(cfg.train.seed if s.seed is None else s.seed for s in mine)
        members.append(BaselineCost(m.model, seeds, steps, probes, branch, sum(p[3] for p in priced)))
    shared = cfg.chain[0].model if cfg.train.seed not in members[0].seeds else ""
    return BaselinePlan(protocol=parity.protocol, seeds=len(parity.seeds), probe_every=parity.probe_every,
                        members=tuple(members), total=sum(b.cost for b in members), shared=shared)


def _baseline_seed(spec: StageSpec) -> tuple[int, int, int, float]:
    """(T, probes, branch steps, FLOPs) of one baseline stage, counted as the trainer counts a stage that never
    stops: every probe's branch L(s) − s is paid (`compt.train.stopping`)."""
    probes = stopping.probe_steps(total=spec.total_steps, warmup=spec.warmup_steps, fraction=spec.decay_fraction,
                                  every_epochs=spec.probe_every, samples=spec.samples,
                                  batch=spec.batch_size) if spec.until else ()
    branch = sum(stopping.branch_total(s, spec.warmup_steps, spec.decay_fraction) - s for s in probes)
    flops = training_flops(spec.student_flops, spec.teacher_flops, (spec.total_steps + branch) * spec.batch_size)
    return spec.total_steps, len(probes), branch, flops


@dataclass(frozen=True)
class FeedAssumptions:
    """What `feed_warnings` assumes of the loader and the accelerator (`compt plan` flags override each)."""

    loader_ms: float = 3.0        # per sample per worker: decode + resize to 224 px + 7 captions tokenised (CC3M)
    peak_tflops: float = 989.0    # dense bf16 peak of the accelerator (H100 SXM)
    mfu: float = 0.4              # fraction of the peak a training step reaches


def feed_warnings(cfg: RunConfig, plan: ChainPlan, assume: FeedAssumptions = FeedAssumptions()) -> list[str]:
    """One line per member whose accelerator would train more samples/s than one rank's loader delivers
    (formulas in the module docstring); none when the data is held in memory."""
    if not cfg.paradigm.decodes_per_sample(cfg.data):
        return []
    workers = cfg.train.loader_workers if cfg.train.loader_workers >= 0 else MAX_AUTO_WORKERS
    feed = max(workers, 1) / (assume.loader_ms * 1e-3)   # 0 workers: the training process decodes alone
    achieved = assume.peak_tflops * 1e12 * assume.mfu
    lines = []
    for m in plan.members:
        needed = achieved / m.sample_flops
        if needed > feed:
            lines.append(f"warning: {m.model} likely loader-bound: it trains about {needed:,.0f} samples/s per "
                         f"accelerator ({assume.peak_tflops:g} TFLOP/s bf16 at {100 * assume.mfu:g} % MFU, "
                         f"{human_flops(m.sample_flops)} per sample) but {workers} loader workers at "
                         f"{assume.loader_ms:g} ms per sample deliver about {feed:,.0f} per rank (data.kind = "
                         f"{cfg.data.kind!r} decodes each sample); pre-decode/resize the data, add CPUs per rank, "
                         f"or measure with benchmarks/bench_gpu.py (\"loader alone\") and pass --loader-ms")
    return lines


def human_flops(x: float) -> str:
    """Format a FLOP count with an SI prefix (PFLOPs / EFLOPs …)."""
    for unit, scale in (("ZFLOPs", 1e21), ("EFLOPs", 1e18), ("PFLOPs", 1e15), ("TFLOPs", 1e12), ("GFLOPs", 1e9)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} FLOPs"


def format_plan(plan: ChainPlan, name: str, paradigm: Paradigm | None = None) -> str:
    """Readable table: per-member costs in FLOPs and in % of the largest member's individual cost; `paradigm` (the
    run's) says what a training sample is (`Paradigm.describe_samples`)."""
    if not plan.largest_individual:   # member 1 used as it is (init, 0 epochs) sets no individual schedule
        return "\n".join([f"{name}: member 1 trains 0 epochs (used as it is from {plan.init}), so there is no "
                           f"individual schedule to compare with: set baseline_epochs", "",
                           *(f"{i:>2}  {m.model:<18} {m.epochs:>6g}  stage {human_flops(m.stage_cost)}"
                             for i, m in enumerate(plan.members, 1)),
                           f"chain cost:            {human_flops(plan.chain_cost)}"])
    ref = plan.largest_individual
    biggest = next(m.model for m in plan.members if m.individual_cost == ref)
    per = f" {paradigm.describe_samples(plan)}".rstrip() if paradigm is not None else ""
    rows = [f"{name}: {plan.samples:,} samples{per}; individual schedule {plan.individual_epochs:g} epochs",
            *plan.notes, ""]
    head = f"{'#':>2}  {'model':<18} {'epochs':>6}  {'individual':>14} {'%L':>6}  {'stage':>14} {'%L':>6}  " \
           f"{'cumulative':>14} {'%L':>6}"
    rows += [head, "-" * len(head)]
    for i, m in enumerate(plan.members, 1):
        rows.append(f"{i:>2}  {m.model:<18} {m.epochs:>6g}  {human_flops(m.individual_cost):>14} "
                    f"{100 * m.individual_cost / ref:>5.1f}%  {human_flops(m.stage_cost):>14} "
                    f"{100 * m.stage_cost / ref:>5.1f}%  {human_flops(m.cumulative_cost):>14} "
                    f"{100 * m.cumulative_cost / ref:>5.1f}%")
    rows += ["", f"chain cost:            {human_flops(plan.chain_cost)} "
                 f"({100 * plan.chain_cost / ref:.1f}% of training {biggest} alone)",
             f"reduction vs largest:  {100 * plan.reduction_vs_largest:.1f}%",
             f"individual total:      {human_flops(plan.individual_total)} (all {len(plan.members)} members)",
             f"family acceleration:   {plan.acceleration:.2f}×"]
    if plan.init:
        rows += [f"member 1 starts from {plan.init}: its stage costs {human_flops(plan.members[0].stage_cost)} "
                 f"(0 when used as it is); counting its training from scratch too, the family acceleration is "
                 f"{plan.acceleration_counting_init:.2f}×"]
    if plan.capped:
        rows += [f"{', '.join(plan.capped)} train until their target: their epochs are a cap, so the chain cost is "
                 f"at most the one above plus the probes' cooldown branches (each about a quarter of the steps "
                 f"before it at the default cooldown); the run's report gives what was spent"]
    if plan.sample_tokens:
        rows += ["", *format_tokens(plan)]
    caches = [f"{m.model} {m.teacher_cache_bytes / 2**30:.3g} GiB" for m in plan.members if m.teacher_cache_bytes]
    if caches:
        rows.append(f"teacher cache per node (bf16, train.teacher_cache): {', '.join(caches)}")
    if plan.baselines is not None:
        rows += ["", *format_baselines(plan.baselines, plan.chain_cost)]
    return "\n".join(rows)


def format_tokens(plan: ChainPlan) -> list[str]:
    """Each member's tokens and tokens per parameter (chain stage and alone), with the compute-optimal ratio."""
    head = f"{'#':>2}  {'model':<18} {'params':>10}  {'stage tokens':>12} {'tok/param':>9}  " \
           f"{'alone tokens':>12} {'tok/param':>9}"
    rows = [head, "-" * len(head)]
    for i, m in enumerate(plan.members, 1):
        rows.append(f"{i:>2}  {m.model:<18} {_count(m.params):>10}  {_count(m.tokens):>12} "
                    f"{_ratio(m.tokens / m.params):>9}  {_count(m.individual_tokens):>12} "
                    f"{_ratio(m.individual_tokens / m.params):>9}")
    return rows + ["compute-optimal training is about 20 tokens per parameter (Chinchilla, Hoffmann et al. 2022); "
                   "growth's benefit is reported to fade above it"]


def _ratio(x: float) -> str:
    """Tokens per parameter: three significant digits, whole numbers from 100 up."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _count(x: float) -> str:
    """A count with an SI suffix (k, M, B, T)."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def format_baselines(arm: BaselinePlan, chain_cost: float) -> list[str]:
    """The protocol in one line, one line per member's baselines, their total and the run's."""
    if arm.probe_every:
        how = (f"every baseline trains on the stopping members' WSD schedule with a probe (cooldown branch) every "
               f"{arm.probe_every:g} epochs and never stops; targets are the median of {arm.seeds} seeds' final "
               f"validation metrics, each arm's cost the FLOPs to its first probe that meets them")
    else:
        how = (f"every baseline trains its individual schedule on {arm.seeds} seeds; targets are the median of "
               f"their final validation metrics")
    rows = [f"parity protocol {arm.protocol}: {how}"]
    for b in arm.members:
        steps = f"{b.steps:,} steps + {b.probe_steps:,} branch steps of {b.probes} probes" if b.probes else \
            f"{b.steps:,} steps"
        rows.append(f"  baseline {b.model:<18} {len(b.seeds)} seed(s) × ({steps}): {human_flops(b.cost)}")
    if arm.shared:
        rows.append(f"  ({arm.shared}'s baseline on the run's seed is chain stage 1, priced in the chain)")
    rows += [f"baselines total:       {human_flops(arm.total)} (all seeds, probes included)",
             f"chain + baselines:     {human_flops(chain_cost + arm.total)}"]
    return rows
