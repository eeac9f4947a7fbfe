"""The generated sections of docs/results.md about runs trained until a target or evaluated downstream:
acceleration at parity (the `parity` experiment; time-to-target: `parity_real`, `lm_parity` for language
models and `vit_parity` for ViT classifiers, one `TTTStudy` each), fine-tuning (benchmarks/finetune_study.py)
and language-model members on lm-evaluation-harness (`benchmarks/make_results.py` assembles them)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from experiments import EXPERIMENTS
from results_data import METRICS
from results_data import complete_runs as _complete_runs
from results_data import pm as _pm
from results_data import rel as _rel

from compt.clip.finetune.runner import FINETUNE_DIR
from compt.clip.finetune.table import load_scores
from compt.paradigm import metric_info
from compt.plan import human_flops
from compt.report import RunSummary, cost_to_reach, stat, summarise


def parity_runs(runs_root: Path) -> list[tuple[str, int, RunSummary, RunSummary]]:
    """(variant, seed, chain run, baselines run) of every finished run of the parity experiment: its chain stops at
    the baselines of `Variant.targets_from` (same seed), whose committed runs hold those baselines."""
    out = []
    for v in EXPERIMENTS["parity"].variants:
        for d, run in _complete_runs(runs_root / "parity" / v.name, baselines=False):
            seed = int(d.name.removeprefix("seed"))
            base = dict(_complete_runs(runs_root / v.targets_from)).get(runs_root / v.targets_from / d.name)
            if base is not None:
                out.append((v.name, seed, run, base))
    return out


def parity_member(chain_row, base_row) -> dict:
    """One grown member at parity: where it stopped, its cost and the baseline's cost to first reach its own
    final metrics (`compt.report.cost_to_reach`), and its held-out Δ against that baseline."""
    final = {k: base_row.metrics[k] for k, _ in METRICS}
    stop = chain_row.stopping
    return {"model": chain_row.model, "reached": stop["reached"], "epochs": chain_row.epochs,
            "cap": stop["probes"][-1]["epoch"] if not stop["reached"] else None, "probes": len(stop["probes"]),
            "chain_flops": chain_row.flops, "baseline_flops": cost_to_reach(base_row.history, final) or base_row.flops,
            "baseline_full": base_row.flops, "chain_wall": chain_row.wall_s, "baseline_wall": base_row.wall_s,
            "best": {k: max(p[k] for p in stop["probes"]) for k, _ in METRICS},
            "delta": {k: chain_row.metrics[k] - base_row.metrics[k] for k, _ in METRICS}}


def parity_section(runs_root: Path) -> list[str]:
    """'Acceleration at parity': per member the compute at which it first matched its baseline, per family
    Σ baseline cost to parity / Σ chain cost (only when every grown member got there)."""
    parts = ["## Acceleration at parity: compute to match each baseline", "",
             "Each grown member trains until it matches its 128-epoch baseline's final zero-shot top-1 and R@1 "
             "(`target`, the committed `paper_protocol` baselines of the same seed), probed every 1× of the "
             "grown-member recipe's epochs (a WSD cooldown branched from the constant phase, validated on the "
             "synthetic corpus's validation split — disjoint from the held-out split the Δ columns are measured "
             "on; the baselines' targets are their held-out metrics), capped at 3× (`python "
             "benchmarks/experiments.py parity --chain-only`). A member's cost includes its probes' discarded "
             "branches; a baseline's cost to parity is read off its evaluation curve (every 16 epochs): the first "
             "evaluation at or above its own final metrics. Family acceleration at parity = Σ baseline cost to "
             "parity ÷ Σ chain cost (member 1 is the same training in both), defined only when every grown member "
             "reached its target. No wall-clock at parity is given: the baselines' wall-clock was measured in "
             "other runs, so a ratio would mix measurements.", ""]
    rows = parity_runs(runs_root)
    if not rows:
        return parts + ["_not run yet_", ""]
    lines = ["| variant | seed | member | reached | epochs | probes | chain FLOPs | baseline FLOPs to parity | "
             "best validation zero-shot / R@1 | held-out Δ zero-shot / R@1 |", "|---|---:|---|---|---:|---:|---:|---:|"
             "---:|---:|"]
    families = []
    for name, seed, run, base in rows:
        members = [parity_member(c, b) for c, b in zip(run.chain[1:], base.individual[1:])]
        for m in members:
            lines.append(f"| {name} | {seed} | {m['model']} | {'yes' if m['reached'] else 'no (cap)'} | "
                         f"{m['epochs']:.1f} | {m['probes']} | {human_flops(m['chain_flops'])} | "
                         f"{human_flops(m['baseline_flops'])} | {m['best']['zeroshot_top1']:.1f} / "
                         f"{m['best']['retrieval_r1']:.1f} | {m['delta']['zeroshot_top1']:+.1f} / "
                         f"{m['delta']['retrieval_r1']:+.1f} |")
        first = run.chain[0].flops
        chain = first + sum(m["chain_flops"] for m in members)
        families.append((name, seed, all(m["reached"] for m in members),
                         (first + sum(m["baseline_flops"] for m in members)) / chain,
                         (first + sum(m["baseline_full"] for m in members)) / chain,
                         sum(m["reached"] for m in members), len(members)))
    verdicts = [f"- {name} seed {seed}: " + (f"every grown member reached its baseline; family acceleration at "
                                            f"parity **{at:.2f}×** in counted FLOPs" if ok else
                                            f"{k} of {n} grown members reached their baselines by the cap — no "
                                            f"acceleration at parity; the chain as trained (members at the cap "
                                            f"where they missed) costs 1/{full:.2f} of training the members alone")
                for name, seed, ok, at, full, k, n in families]
    means = []
    for name in dict.fromkeys(f[0] for f in families):
        runs = [f for f in families if f[0] == name]
        if all(f[2] for f in runs):
            means.append(f"- {name}: at parity on every seed; mean family acceleration at parity "
                         f"**{_pm(stat([f[3] for f in runs]), 2)}×** over {len(runs)} seed(s)")
        else:
            means.append(f"- {name}: {sum(f[2] for f in runs)} of {len(runs)} seeds at parity — no mean at parity")
    return parts + ["\n".join(lines), "", *verdicts, "", *means, ""]


def finetune_rows(runs_root: Path) -> list[tuple[str, str, str, str, dict, dict, int]]:
    """(variant, model, dataset, mode, chain stat, individual stat, seeds) of every grown member with fine-tuning
    results for both methods, from the committed ``<run>/finetune`` JSONs (benchmarks/finetune_study.py); a run
    ``…/seedK`` counts as a seed of its variant, any other run folder as a variant of its own."""
    variants: dict[Path, list[Path]] = {}
    for ft in sorted(runs_root.glob(f"**/{FINETUNE_DIR}")):
        run = ft.parent
        variants.setdefault(run.parent if run.name.startswith("seed") else run, []).append(run)
    rows = []
    for variant, seed_runs in variants.items():
        scores = load_scores(seed_runs)
        for model in (scores or {}).get("models", [])[1:]:    # member 1 is the same training in both methods
            chain, ind = (scores["scores"].get((model, m), {}) for m in ("chain", "individual"))
            for col in scores["columns"]:
                if chain.get(col) and ind.get(col):
                    rows.append((_rel(variant), model, *col, stat(chain[col]), stat(ind[col]),
                                 min(len(chain[col]), len(ind[col]))))
    return rows


def finetune_section(runs_root: Path) -> list[str]:
    """'Does fine-tuning close the chain's gap?': chain against individual after fine-tuning each grown member."""
    parts = ["## Does fine-tuning close the chain's gap?", "",
             "Each grown member's image tower and its individual baseline's, fine-tuned the same way with a linear "
             "head (`compt finetune`; full: tower + head, linear: frozen tower) on a labelled set; held-out top-1 "
             "(%), mean ± std over seeds, Δ = chain − individual. Made with `python benchmarks/finetune_study.py "
             "RUN_DIR …`.", ""]
    rows = finetune_rows(runs_root)
    if not rows:
        return parts + ["_not run yet_", ""]
    lines = ["| variant | member | dataset | mode | chain | individual | Δ | seeds |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    negative = []
    for variant, model, dataset, mode, c, i, n in rows:
        delta = c["mean"] - i["mean"]
        negative += [f"{variant} {model} {dataset} {mode} ({delta:+.1f})"] if delta < 0 else []
        lines.append(f"| {variant} | {model} | {dataset} | {mode} | {_pm(c)} | {_pm(i)} | {delta:+.1f} | {n} |")
    verdict = (f"Δ stays negative after fine-tuning in {len(negative)} of {len(rows)} cases: {'; '.join(negative)}."
               if negative else f"Δ is zero or positive in all {len(rows)} cases: fine-tuning closes the gap here.")
    return parts + ["\n".join(lines), "", verdict, "", finetune_settings(runs_root), ""]


def finetune_settings(runs_root: Path) -> str:
    """The distinct fine-tuning settings behind the table (each result JSON records its own)."""
    seen = {}
    for f in sorted(runs_root.glob(f"**/{FINETUNE_DIR}/**/*.json")):
        raw = json.loads(f.read_text())
        settings = {k: v for k, v in raw.get("settings", {}).items() if k != "mode"}
        seen.setdefault(json.dumps(settings, sort_keys=True), settings)
    return "Settings: " + "; ".join(", ".join(f"{k} {v}" for k, v in s.items()) for s in seen.values()) + "."


def lm_eval_section(runs_root: Path) -> list[str]:
    """'Language-model members on lm-evaluation-harness': every committed run with ``lm_eval/`` results
    (`compt eval RUN --lm-eval held-out`), one table per task, chain | individual | Δ."""
    from compt.lm.harness import HARNESS_DIR
    from compt.lm.harness.table import format_task_table, load_harness

    parts = ["## Language-model members on lm-evaluation-harness", "",
             "Every member of a language-model run exported and evaluated by EleutherAI's lm-evaluation-harness "
             "(`compt eval RUN_DIR --lm-eval held-out`, fp32, offline): `held-out` is the run's own held-out split "
             "as a rolling log-likelihood task (bits per byte, byte and word perplexity; lower is better), "
             "Δ = chain − individual.", ""]
    found = False
    for index in sorted(runs_root.glob(f"**/{HARNESS_DIR}/members.json")):
        harness = load_harness(index.parent.parent)
        if harness is None:
            continue
        found = True
        for task in dict.fromkeys(t for t, _ in harness["columns"]):
            parts += [f"`{_rel(index.parent.parent)}`, task `{task}`:", "", format_task_table(harness, task), ""]
    return parts if found else parts + ["_not run yet_", ""]


def ttt_rows(runs_root: Path, experiment: str = "parity_real") -> list[tuple[str, int, dict]]:
    """(variant, seed, `compt.report.summarise` of the run) of every finished run of a parity experiment whose
    grown members train until a target (chain and every baseline seed finished)."""
    out = []
    for v in EXPERIMENTS[experiment].variants:
        for d, run in _complete_runs(runs_root / experiment / v.name):
            summary = summarise([run])
            if summary["family"].get("parity") and all(r is not None for seeds in run.baseline_seeds for r in seeds):
                out.append((v.name, int(d.name.removeprefix("seed")), summary))
    return out


def fixed_rows(runs_root: Path, experiment: str) -> list[tuple[str, int, dict]]:
    """(variant, seeds, `compt.report.summarise` over its seeds) of every variant of `experiment` whose grown
    members train a fixed number of epochs (no target), baselines finished."""
    out = []
    for v in EXPERIMENTS[experiment].variants:
        runs = [run for _, run in _complete_runs(runs_root / experiment / v.name)]
        if runs and not any(x.stopping for r in runs for x in r.chain[1:]):
            out.append((v.name, len(runs), summarise(runs)))
    return out


@dataclass(frozen=True)
class TTTStudy:
    """A time-to-target experiment's section: its experiment, title, what it trained (`setup`, before the protocol's
    shared description `TTT_PROTOCOL`), the held-out metrics of its Δ column and that column's header."""

    experiment: str
    title: str
    setup: str
    deltas: tuple[str, ...]      # metric keys of `compt.report.summarise`'s ``delta_<key>`` (chain − baseline)
    delta_header: str


TTT_PROTOCOL = (
    "every baseline trains on 2 seeds under the grown members' stopping rule (WSD, probes every quarter of the cap on "
    "the validation split, never stopping), a member's target is the median of its baselines' final validation "
    "{target}, and both arms' cost to it is the counted FLOPs at their first probe that meets it, earlier probes' "
    "branches included (baseline arm: the median over the 2 seeds; a seed that never meets the target by its cap "
    "counts its whole schedule, so a cost marked ≥ and the family figure after it are lower bounds).")

TTT_WALL = (
    "Wall-clock at parity, in the verdicts where the runs recorded it: both arms' training wall clock to the same "
    "probes (each probe records its stage's wall clock, validation excluded), a measurement only where no stage "
    "behind it ran under CPU contention.")

PARITY_REAL = TTTStudy(
    "parity_real", "Acceleration at parity on real image–text pairs (time-to-target)",
    "Open Clip Art (8,118 readable images of real clip art; captions from each SVG's title, description and "
    "keywords; zero-shot over its 22 categories; 1,000 held out, 1,000 carved for validation by a hash of "
    "each file's key), the 17× family N → C → M → B (and, at 2 epochs, families of 3 and 6 members over "
    "the same span, sharing its baselines), measured as MLPerf/AlgoPerf measure time-to-result "
    "(`parity_protocol = \"time-to-target\"`, `python benchmarks/experiments.py parity_real`): "
    + TTT_PROTOCOL.format(target="zero-shot top-1 and R@1") + " Grown members: the demo's recipe (preserve + fd "
    "α = 50, √ cooldown), capped at the baselines' epochs. " + TTT_WALL,
    tuple(k for k, _ in METRICS), "held-out Δ zero-shot / R@1")

PARITY_TTT = TTTStudy(
    "parity_ttt", "Acceleration at parity on the synthetic corpus, time-to-target",
    "The synthetic headline family N → C → M → B (the embedded corpus, 2,500 pairs, 128-epoch baselines) with "
    "`parity-NCMB`'s grown members (the recipe on a WSD schedule, √ cooldown, capped at 3× its epochs, probed every "
    "1×), measured time-to-target (`python benchmarks/experiments.py parity_ttt`): "
    + TTT_PROTOCOL.format(target="zero-shot top-1 and R@1") + " The same grown members under the baseline-curve "
    "protocol are `parity-NCMB` in \"Acceleration at parity\" above, so the two protocols meet on one family. "
    + TTT_WALL, tuple(k for k, _ in METRICS), "held-out Δ zero-shot / R@1")

LM_PARITY = TTTStudy(
    "lm_parity", "Language models at parity with a Hugging Face BPE (time-to-target)",
    "The Llama family lm-cpu 1M → 2M → 6M → 22M on the Python 3.11 documentation (lm-base: 1,024 training windows "
    "of 128 tokens; 2-epoch schedules, half lm-base's) with a 2,048-id byte-level BPE "
    "(`benchmarks/data/pydoc-bpe2k`, fitted by `benchmarks/make_tokenizer.py` on the files before the validation "
    "and held-out windows), so every member's "
    "vocabulary is resized from 264 to 2,048; measured time-to-target on the held-out loss (`val_loss`, nats per "
    "token, lower is better; `python benchmarks/experiments.py lm_parity`): "
    + TTT_PROTOCOL.format(target="loss (the 256 windows just before the held-out ones)") + " Grown members: "
    "preserve + token KL (α = 1, as lm-base), √ cooldown, capped at the baselines' 2 epochs. Δ = chain − baseline "
    "held-out loss (negative: the grown member is better). " + TTT_WALL + " lm-evaluation-harness "
    "on its exported members (`python benchmarks/lm_eval_study.py --experiment lm_parity`) is tabulated in "
    "\"Language-model members on lm-evaluation-harness\".",
    ("val_loss",), "held-out Δ loss")

VIT_PARITY = TTTStudy(
    "vit_parity", "Supervised ViT classifiers at parity on Fashion-MNIST (time-to-target)",
    "The timm ViT family vit-tiny XS → S → M → L (28 px, patch 4, head dim 16; 39× in FLOPs from XS to L; "
    "`compt.vit`, registered through its entry point) on Fashion-MNIST (vit-base: 2,000 training images, the first "
    "1,000 of `t10k` held out, 500 validation images carved out of the training draw), measured time-to-target on "
    "top-1 (`python benchmarks/experiments.py vit_parity`): " + TTT_PROTOCOL.format(target="top-1") + " Grown "
    "members: exact growth (preserve) + logit KL (α = 1, as vit-base), √ cooldown, capped at the baselines' 4 "
    "epochs. Δ = chain − baseline held-out top-1. " + TTT_WALL,
    ("top1",), "held-out Δ top-1")


def parity_real_section(runs_root: Path) -> list[str]:
    """'Acceleration at parity on real image–text pairs (time-to-target)' (`ttt_section` of `PARITY_REAL`)."""
    return ttt_section(runs_root, PARITY_REAL)


def parity_ttt_section(runs_root: Path) -> list[str]:
    """'Acceleration at parity on the synthetic corpus, time-to-target' (`ttt_section` of `PARITY_TTT`)."""
    return ttt_section(runs_root, PARITY_TTT)


def lm_parity_section(runs_root: Path) -> list[str]:
    """'Language models at parity with a Hugging Face BPE (time-to-target)' (`ttt_section` of `LM_PARITY`)."""
    return ttt_section(runs_root, LM_PARITY)


def vit_parity_section(runs_root: Path) -> list[str]:
    """'Supervised ViT classifiers at parity on Fashion-MNIST (time-to-target)' (`ttt_section` of `VIT_PARITY`)."""
    return ttt_section(runs_root, VIT_PARITY)


def ttt_section(runs_root: Path, study: TTTStudy) -> list[str]:
    """A time-to-target study: per member both arms' cost to its target, per run the family figure under the
    time-to-target protocol (`compt.parity`), per variant every seed's figure."""
    parts = [f"## {study.title}", "", study.setup, ""]
    rows = ttt_rows(runs_root, study.experiment)
    if not rows:
        return parts + ["_not run yet_", ""]
    lines = ["| variant | seed | member | chain: reached | chain epochs | chain FLOPs to target | baseline FLOPs to "
             f"target (median of seeds) | baseline seeds that reached it | {study.delta_header} |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    verdicts = []
    for name, seed, s in rows:
        parity = s["family"].get("parity", {})
        chain = {m["model"]: m for m in s["members"] if m["method"] == "chain"}
        for a in parity.get("arms", []):
            m = chain[a["model"]]
            stop = m.get("stopping")
            reached = ("yes" if stop["reached"] else "no (cap)") if stop else "— (trained its schedule)"
            base = ("≥ " if a["seeds_reached"] < a["seeds"] else "") + human_flops(a["baseline"]["mean"])
            delta = " / ".join(f"{m[f'delta_{k}']:+.{metric_info(k).digits}f}" if f"delta_{k}" in m else "—"
                               for k in study.deltas)
            lines.append(f"| {name} | {seed} | {a['model']} | {reached} | {m['epochs']:.2f} | "
                         f"{human_flops(a['chain']['mean'])} | {base} | {a['seeds_reached']} of {a['seeds']} | "
                         f"{delta} |")
        verdicts.append(f"- {name} seed {seed}: " + (
            f"every grown member reached its target; family acceleration at parity ({parity['protocol']}) "
            f"**{'≥ ' if parity.get('lower_bound') else ''}{parity['acceleration_flops']['mean']:.2f}×** in counted "
            f"FLOPs (whole baseline schedules against the chain as run: "
            f"{s['family']['acceleration_flops']['mean']:.2f}×){_ttt_wall(parity)}" if parity.get("reached_all") else
            "no acceleration at parity: " + _missed(chain)))
    return parts + ["\n".join(lines), "", *verdicts, "", *_by_variant(rows), "",
                    *_fixed_lines(fixed_rows(runs_root, study.experiment), study.deltas)]


def _fixed_lines(rows: list[tuple[str, int, dict]], deltas: tuple[str, ...]) -> list[str]:
    """Beside the figures at parity: each fixed-fraction variant's family acceleration in counted FLOPs and its
    grown members' held-out Δ against their baselines (mean over seeds)."""
    out = []
    for name, n, s in rows:
        grown = [m for m in s["members"] if m["method"] == "chain"][1:]
        per = "; ".join(f"{m['model']} " + " / ".join(f"{m[f'delta_{k}']:+.{metric_info(k).digits}f}"
                                                       for k in deltas if f"delta_{k}" in m) for m in grown)
        epochs = ", ".join(f"{m['epochs']:g}" for m in grown)
        accel = s["family"]["acceleration_flops"]["mean"]
        out.append(f"- {name} (grown members at the paper's fixed fractions: {epochs} epochs, no stopping; "
                   f"{n} seed{'s' if n > 1 else ''}): family acceleration **{accel:.2f}×** in counted FLOPs; "
                   f"held-out Δ against the baselines ({' / '.join(metric_info(k).label for k in deltas)}): {per}")
    return out + [""] if out else []


def _missed(chain: dict[str, dict]) -> str:
    """Which grown members missed their target by the cap: per member its best validation probe against the
    target, and the parent-distance diagnostic at the stage's end (`compt.diagnostics`: linear CKA of its held-out
    representations with its parent's, 1 = the parent's representation; the relative update norm
    ‖θ_end − θ_start‖ / ‖θ_start‖)."""
    missed = [m for m in chain.values() if m.get("stopping") and not m["stopping"]["reached"]]
    if not missed:
        return "a grown member did not reach its target"
    return "; ".join(f"{m['model']} did not reach its target by the cap ({_short_of(m['stopping'])}"
                     f"{_distance(m.get('diagnostics') or {})})" for m in missed)


def _short_of(stop: dict) -> str:
    """'best probe X vs target Y' for each target metric of a missed member."""
    best, target = stop.get("best_missed") or {}, stop.get("target") or {}
    return ", ".join(f"{metric_info(k).label} best probe {best[k]['mean']:.{metric_info(k).digits}f} vs target "
                     f"{target[k]['mean']:.{metric_info(k).digits}f}" for k in target if k in best)


def _distance(diag: dict) -> str:
    """The parent-distance diagnostic of a stage at its end (every representation's CKA, the update norm), where
    recorded."""
    cka = [f"{k.removeprefix('cka_').removesuffix('_end')} {v['mean']:.3f}" for k, v in diag.items()
           if k.startswith("cka_") and k.endswith("_end")]
    parts = ([f"CKA to its parent: {', '.join(cka)}"] if cka else []) + (
        [f"relative update norm {diag['update_norm']['mean']:.3f}"] if "update_norm" in diag else [])
    return "; " + ", ".join(parts) if parts else ""


def _ttt_figure(summary: dict) -> str:
    """A run's family acceleration at parity (time-to-target), '≥ ' for a lower bound, 'not reached' without one."""
    parity = summary["family"].get("parity", {})
    if not parity.get("reached_all"):
        return "not reached"
    return f"{'≥ ' if parity.get('lower_bound') else ''}{parity['acceleration_flops']['mean']:.2f}×"


def _ttt_wall(parity: dict) -> str:
    """'; training wall-clock at parity …', read from the same runs' probes (`compt.time_to_target`): a
    measurement when no stage behind it was contended, else indicative with the reason; '' where the baselines'
    probes predate the probes' wall-clock record."""
    if "acceleration_wall" not in parity:
        return ""
    figure = f"{'≥ ' if parity.get('lower_bound') else ''}{parity['acceleration_wall']['mean']:.2f}×"
    caveat = parity.get("acceleration_wall_caveat")
    return (f"; training wall-clock at parity **{figure}**, measured (no stage contended)" if caveat is None else
            f"; training wall-clock at parity {figure}, indicative only ({caveat})")


def _by_variant(rows: list[tuple[str, int, dict]]) -> list[str]:
    """One row per variant: its members and every seed's family figure (the family-size question: does the
    acceleration at parity grow with the number of members over one span?)."""
    out = ["| variant | members | per seed: acceleration at parity (counted FLOPs) | whole baseline schedules vs the "
           "chain as run |",
           "|---|---:|---|---|"]
    for name in dict.fromkeys(n for n, _, _ in rows):
        runs = [(seed, s) for n, seed, s in rows if n == name]
        members = sum(m["method"] == "chain" for m in runs[0][1]["members"])
        figures = ", ".join(f"seed {seed}: {_ttt_figure(s)}" for seed, s in runs)
        caps = ", ".join(f"{s['family']['acceleration_flops']['mean']:.2f}×" for _, s in runs)
        out.append(f"| {name} | {members} | {figures} | {caps} |")
    return out
