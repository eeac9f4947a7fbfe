"""What a stage's settings fingerprint keeps and how two fingerprints differ (`compt.chain.fingerprint` takes one
when a stage starts; `compt.chain.stage_changes` compares a finished stage's with the run's settings now).

A fingerprint is ``{"members": [...], "data": {...}, "train": {...}}`` (plus ``parity`` where a target depends on
it); these rules keep fingerprints written by older versions comparable: settings added later enter only when
set, settings that cannot change a result are dropped, and a stored fingerprint is read for the settings the
run's paradigm has.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compt.config import MemberConfig, RunConfig

# settings that cannot change a stage's numbers (data.workers, loader_workers) or that are recorded next to
# them instead (threads, see compt.threads): changing them on resume is not a settings change
NOT_FINGERPRINTED = {"data": ("workers",), "train": ("ckpt_every_steps", "log_every_steps", "eval_every_epochs",
                                                      "loader_workers", "threads", "report_to",
                                                      "wandb_project", "compile", "teacher_cache_dir")}

# Settings added after the first fingerprints were written: they enter a fingerprint only when set (not None),
# so run directories made before they existed keep the same fingerprint (`settings_changes` reads an absent
# key as None). Member schedule options also enter a from-scratch stage's fingerprint.
MEMBER_SETTINGS_ADDED_LATER = ("decay_fraction", "distill_schedule", "patch_dropout", "schedule", "cooldown_shape",
                               "init", "until", "probe_every")
SETTINGS_ADDED_LATER = (*MEMBER_SETTINGS_ADDED_LATER, "distill_temperature", "shrink", "perturb", "snr_db",
                        "inherit", "until", "target", "probe_every", "objective", "tokenizer", "shuffle_buffer",
                        "resampled", "val_path", "val_samples", "validation", "text_field")


def later_settings(m: MemberConfig) -> dict[str, Any]:
    """The `MEMBER_SETTINGS_ADDED_LATER` that `m` has (a paradigm's own, such as patch_dropout, only its members)
    and sets."""
    return {k: getattr(m, k) for k in MEMBER_SETTINGS_ADDED_LATER if getattr(m, k, None) is not None}


def only_set(d: dict[str, Any]) -> dict[str, Any]:
    """`d` without the settings added later that are unset (see `SETTINGS_ADDED_LATER`)."""
    return {k: v for k, v in d.items() if not (k in SETTINGS_ADDED_LATER and v is None)}


# a grown stage's fingerprint lists member 1 too, but member 1 trains from scratch: how members are grown and
# distilled cannot change anything of it (older versions recorded their defaults there, e.g. distill "fd" for LMs)
FIRST_MEMBER_UNUSED = ("growth", "distill", "distill_weight", "distill_temperature", "distill_schedule", "shrink",
                       "perturb", "snr_db", "inherit")


def without_unfingerprinted(fp: dict[str, Any]) -> dict[str, Any]:
    """`fp` without the `NOT_FINGERPRINTED` settings and member 1's `FIRST_MEMBER_UNUSED` ones (also applied to
    fingerprints stored by older runs)."""
    out = dict(fp)
    for table, keys in NOT_FINGERPRINTED.items():
        if isinstance(out.get(table), dict):
            out[table] = {k: v for k, v in out[table].items() if k not in keys}
    members = out.get("members")
    if isinstance(members, list) and len(members) > 1 and isinstance(members[0], dict):
        out["members"] = [{k: v for k, v in members[0].items() if k not in FIRST_MEMBER_UNUSED}, *members[1:]]
    return out


def own_settings(stored: dict[str, Any], cfg: RunConfig) -> dict[str, Any]:
    """`stored` without the `[data]` and member settings the run's paradigm does not have (`Paradigm.data_options`,
    `member_options`): older versions recorded every paradigm's, e.g. CLIP's ``csv_img_key`` in a language model's
    fingerprint, where it could not touch the result."""
    out = dict(stored)
    if isinstance(data := stored.get("data"), dict):
        own = {f.name for f in fields(cfg.data)} | {"validation"}
        out["data"] = {k: v for k, v in data.items() if k in own}
    if isinstance(members := stored.get("members"), list):
        own = {f.name for f in fields(cfg.paradigm.member_options)}
        out["members"] = [{k: v for k, v in m.items() if k in own} if isinstance(m, dict) else m for m in members]
    return out


def settings_changes(old: Any, new: Any, prefix: str = "", first_member: int = 1) -> list[str]:
    """Differences between two fingerprints, one 'key: old -> new' line each (a key absent from one side
    counts as None there, so a setting added to compt later, left at its default None, is no change).

    Members are named 1-based like stages and error messages (``member 3.epochs``); `first_member` is the
    chain position of the fingerprint's first member (a baseline's fingerprint holds only its own member).
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += settings_changes(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k), first_member)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        name = prefix.removesuffix("s")
        return [d for i, (a, b) in enumerate(zip(old, new))
                for d in settings_changes(a, b, f"{name} {first_member + i}", first_member)]
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]
