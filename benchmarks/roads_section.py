"""The generated section of docs/results.md comparing the two roads to a family (experiment `roads`): the
up-chain (CoM-PT: grow the smallest member), the down-chain (train the largest, prune each smaller member from the
one before and distil it) and individual training, each until parity under the time-to-target protocol.

A road's cost to the family at parity is Σ over the members of each member's cost to its target, counted FLOPs:

    up, down:    Σ_m C_chain(m)     (member 1: its whole schedule; every other member: its stage until the target,
                                     probes' branches included; a member that misses its target: its whole cap)
    individual:  Σ_m C_base(m)      (the median over the baseline seeds of the cost to the target; a seed that
                                     never meets it counts its whole schedule: a lower bound)

Both chains of a family share one set of baselines (the same targets), so the individual road is the same number
in both runs. "The largest member already exists" counts that member's cost as 0 on the roads that use it — the
down-chain (its member 1) and individual training — while the up-chain still grows it.
"""

from __future__ import annotations

from pathlib import Path

from study_sections import TTT_PROTOCOL, TTTStudy, ttt_rows, ttt_section

from compt.plan import human_flops

ROADS = TTTStudy(
    "roads", "The two roads to a family: grow up (CoM-PT) or prune down (Minitron-style), at parity",
    "The same family, data and targets on both roads (`python benchmarks/experiments.py roads`): the up-chain "
    "trains the smallest member and grows each larger one from its predecessor (preserve + distillation); the "
    "down-chain trains the largest member from scratch and prunes each smaller one from its predecessor by "
    "activation importance on 1,024 calibration samples (`growth = \"prune\"`, docs/method.md#pruning-down), then "
    "distils it; Open Clip Art N … B at 2 epochs (the recipe of the section above) and the Llama family lm-cpu "
    "1M → 6M → 22M on the Python documentation (the 2,048-id BPE and 2-epoch schedules of the LM section above, "
    "sharing its baselines). Measured time-to-target: "
    + TTT_PROTOCOL.format(target="metrics (CLIP: zero-shot top-1 and R@1; LMs: loss)"),
    ("zeroshot_top1", "retrieval_r1", "val_loss"), "held-out Δ (zero-shot / R@1 / loss)")

# (family, up-chain variant, down-chain variant) of the roads experiment
PAIRS = (("Open Clip Art N … B", "ttt-openclipart-2ep", "ttt-openclipart-2ep-down"),
         ("lm-cpu 1M → 6M → 22M", "lm3-bpe2k-2ep", "lm3-bpe2k-2ep-down"))


def road_costs(summary: dict) -> dict[str, float | bool | str]:
    """A run's family cost at parity on its road and on the individual one (module docstring), whether every
    member reached its target, whether the individual figure is a lower bound, and its largest member's costs."""
    arms = summary["family"]["parity"]["arms"]
    largest = max(arms, key=lambda a: a["baseline"]["mean"])
    reached = all(m["stopping"]["reached"] for m in summary["members"]
                  if m["method"] == "chain" and m.get("stopping"))
    return {"road": sum(a["chain"]["mean"] for a in arms), "individual": sum(a["baseline"]["mean"] for a in arms),
            "reached": reached, "bound": any(a["seeds_reached"] < a["seeds"] for a in arms),
            "largest": largest["model"], "largest_chain": largest["chain"]["mean"],
            "largest_base": largest["baseline"]["mean"]}


def roads_section(runs_root: Path) -> list[str]:
    """The per-member time-to-target tables of both roads (`ttt_section`), then one row per family and seed: each
    road's cost to the family at parity, with and without the largest member's."""
    parts = ttt_section(runs_root, ROADS)
    rows = {(name, seed): s for name, seed, s in ttt_rows(runs_root, ROADS.experiment)}
    lines = ["| family | seed | up-chain | down-chain | individual | up ÷ down | largest already exists: up / down / "
             "individual |", "|---|---:|---:|---:|---:|---:|---|"]
    verdicts = []
    for family, up_name, down_name in PAIRS:
        for seed in sorted({seed for name, seed in rows if name in (up_name, down_name)}):
            if (up_name, seed) not in rows or (down_name, seed) not in rows:
                continue
            up, down = road_costs(rows[up_name, seed]), road_costs(rows[down_name, seed])
            ind = ("≥ " if up["bound"] else "") + human_flops(up["individual"])
            cell = {r: human_flops(c["road"]) + ("" if c["reached"] else " (missed)") for r, c in (("up", up),
                                                                                                   ("down", down))}
            exists = (f"{human_flops(up['road'])} / {human_flops(down['road'] - down['largest_chain'])} / "
                      f"{human_flops(up['individual'] - up['largest_base'])}")
            lines.append(f"| {family} | {seed} | {cell['up']} | {cell['down']} | {ind} | "
                         f"{up['road'] / down['road']:.2f} | {exists} |")
            cheaper = "up-chain" if up["road"] < down["road"] else "down-chain"
            verdicts.append(f"- {family}, seed {seed}: the {cheaper} is cheaper to the whole family "
                            f"({human_flops(min(up['road'], down['road']))} against "
                            f"{human_flops(max(up['road'], down['road']))})"
                            + ("" if up["reached"] and down["reached"] else
                               "; a road with a member that missed its target is marked (missed): its cost is a "
                               "cap, not a cost at parity")
                            + f"; with {up['largest']} already trained, the down-chain costs "
                            f"{human_flops(down['road'] - down['largest_chain'])} against the up-chain's "
                            f"{human_flops(up['road'])}.")
    if len(lines) == 2:
        return parts
    return parts + ["Cost to the whole family at parity, counted FLOPs (module docstring of "
                    "`benchmarks/roads_section.py`):", "", "\n".join(lines), "", *verdicts, "",
                    "**Conclusion.**", "", *conclusions(rows), ""]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def conclusions(rows: dict[tuple[str, int], dict]) -> list[str]:
    """One plain line per family over its seeds: which road is cheaper from scratch and when the largest member
    already exists, and on how many seeds a road missed a target (its figure then a cap, not a cost at parity)."""
    out = []
    for family, up_name, down_name in PAIRS:
        seeds = sorted(seed for name, seed in rows if name == up_name and (down_name, seed) in rows)
        if not seeds:
            continue
        up = [road_costs(rows[up_name, s]) for s in seeds]
        down = [road_costs(rows[down_name, s]) for s in seeds]
        n, largest = len(seeds), up[0]["largest"]
        up_wins = sum(u["road"] < d["road"] for u, d in zip(up, down))
        exists = [d["road"] - d["largest_chain"] for d in down]
        down_exists_wins = sum(e < u["road"] for e, u in zip(exists, up))
        missed = {"up-chain": sum(not u["reached"] for u in up), "down-chain": sum(not d["reached"] for d in down)}
        caveat = "; ".join(f"the {road} missed a member's target on {k} of {n} seed(s), so its figure there is a cap"
                           for road, k in missed.items() if k)
        scratch = ("the up-chain (CoM-PT) is cheaper" if up_wins == n else "the down-chain is cheaper"
                   if up_wins == 0 else f"neither road is cheaper on every seed (the up-chain on {up_wins} of {n})")
        have = ("the down-chain is cheaper" if down_exists_wins == n else "the up-chain is still cheaper"
                if down_exists_wins == 0 else f"the down-chain is cheaper on {down_exists_wins} of {n} seeds")
        out.append(f"- **{family}** ({n} seed(s)): trained from scratch, {scratch} — "
                   f"{human_flops(_mean([u['road'] for u in up]))} against "
                   f"{human_flops(_mean([d['road'] for d in down]))} on average, individual training "
                   f"{'≥ ' if any(u['bound'] for u in up) else ''}{human_flops(_mean([u['individual'] for u in up]))}"
                   f". When {largest} already exists, the down-chain costs {human_flops(_mean(exists))} against the "
                   f"up-chain's {human_flops(_mean([u['road'] for u in up]))}: {have}"
                   + (f" ({caveat})" if caveat else "") + ".")
    return out
