"""A paradigm owns its settings: its `[data]` keys are its `DataConfig` subclass (`Paradigm.data_options`), parsed,
validated, fingerprinted and documented through it; the core's tables keep what every paradigm shares, and a
key of another paradigm is a one-line error — except in a run directory's config.toml written before, which held
every paradigm's keys and still reads and resumes."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
from test_paradigm import RAW, ToyParadigm

from compt import paradigm as registry
from compt.chain import fingerprint, plan_stages, stage_changes
from compt.clip.settings import ClipDataConfig, ClipMemberConfig
from compt.config import DataConfig, config_from_dict, config_to_dict, load_config, read_run_config, validate
from compt.docs_gen import field_docs, paradigm_sections, render
from compt.errors import UserError
from compt.lm.settings import LMDataConfig
from compt.settings import LogitDistillMember

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
OLD_LM = ROOT / "tests" / "data" / "runs-fdb5b53" / "old-lm"
SHARED = ("kind", "path", "num_samples", "eval_samples", "eval_path", "seed", "val_path", "val_samples")
CLIP_DEFAULTS = {"root": "", "captions_per_image": 1, "csv_img_key": "filepath", "csv_caption_key": "caption",
                 "csv_separator": ",", "max_bad_fraction": 0.01, "workers": 0, "caption_separator": "",
                 "predecode_max": 50_000, "cache_dir": "", "zeroshot_folder": "", "probe_samples": 2_000}


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_validates_and_writes_what_it_read(path: Path) -> None:
    raw = tomllib.loads(path.read_text())
    cfg = load_config(path)
    assert type(cfg.data) is cfg.paradigm.data_options and cfg.paradigm.name in ("clip", "lm")
    written = config_to_dict(cfg)
    assert {k: written["data"][k] for k in raw["data"]} == raw["data"]           # every key as the file says
    again = config_from_dict(tomllib.loads(_toml(written)), stored=True)
    assert again == cfg and type(again.data) is type(cfg.data)                  # config.toml reads back the same
    own = CLIP_DEFAULTS if cfg.paradigm.name == "clip" else {}
    assert set(written["data"]) == {k for k in SHARED if k not in ("val_path", "val_samples")} | set(own)
    assert {k: v for k, v in written["data"].items() if k in own and k not in raw["data"]} == \
        {k: v for k, v in own.items() if k not in raw["data"]}                   # the paradigm's defaults, written


def _toml(d: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(d)


def test_the_shared_table_and_the_paradigms_tables() -> None:
    assert tuple(f.name for f in fields(DataConfig)) == SHARED
    assert tuple(f.name for f in fields(ClipDataConfig))[len(SHARED):] == tuple(CLIP_DEFAULTS) + (
        "shuffle_buffer", "resampled")
    assert tuple(f.name for f in fields(LMDataConfig))[len(SHARED):] == ("tokenizer", "text_field")
    assert ClipDataConfig(captions_per_image=7).caption_slots == 7 and LMDataConfig().caption_slots == 1


@pytest.mark.parametrize("config, override, message", [
    ("lm-pythia.toml", "data.captions_per_image=7", r"^captions_per_image in \[data\] is a setting of CLIP models "
     r"\(paradigm clip\); this chain's models are language models \(their \[data\] keys: kind, path, num_samples, "
     r"eval_samples, eval_path, seed, val_path, val_samples, tokenizer, text_field\)$"),
    ("paper-cc3m-vit.toml", "data.tokenizer=\"bpe\"", r"^tokenizer in \[data\] is a setting of language models "
     r"\(paradigm lm\); this chain's models are CLIP models \(their \[data\] keys: kind, path, .*resampled\)$"),
    ("lm-pythia.toml", "chain.1.patch_dropout=0.5", r"^patch_dropout in \[chain.1\] \(member 2\) is a setting of CLIP "
     r"models \(paradigm clip\); this chain's models are language models \(their \[\[chain\]\] keys: model, "
     r"epochs, .*, inherit, distill_temperature\)$"),
    ("paper-cc3m-vit.toml", "chain.1.distill_temperature=2", r"^distill_temperature in \[chain.1\] \(member 2\) is a "
     r"setting of language models \(paradigm lm\), ViT classifiers \(paradigm vit\); this chain's models are CLIP "
     r"models \(their \[\[chain\]\] keys: model, .*, inherit, patch_dropout\)$"),
    ("paper-cc3m-vit.toml", "data.csv_img_kee=\"x\"", r"^unknown key in \[data\] 'csv_img_kee'; did you mean "
     r"'csv_img_key'"),
    ("lm-pythia.toml", "data.tokeniser=\"bpe\"", r"^unknown key in \[data\] 'tokeniser'; did you mean 'tokenizer'"),
    ("lm-pythia.toml", "chain.1.distill_temprature=2", r"^unknown key in \[chain.1\] \(member 2\) "
     r"'distill_temprature'; did you mean 'distill_temperature'"),
])
def test_a_key_of_another_paradigm_or_of_none_is_one_line(config: str, override: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        load_config(ROOT / "configs" / config, [override])
    assert "\n" not in str(err.value)


def test_a_paradigms_own_key_is_range_checked_by_it() -> None:
    with pytest.raises(UserError, match=r"^data.captions_per_image must be at least 1, got 0$"):
        load_config(ROOT / "configs" / "paper-cc3m-vit.toml", ["data.captions_per_image=0"])
    with pytest.raises(UserError, match=r"^data.shuffle_buffer must be at least 1, got 0$"):
        load_config(ROOT / "configs" / "paper-cc3m-vit.toml", ["data.shuffle_buffer=0"])
    with pytest.raises(UserError, match=r"^data.num_samples must be at least 1, got 0$"):   # the shared check too
        load_config(ROOT / "configs" / "lm-pythia.toml", ["data.num_samples=0"])
    with pytest.raises(UserError, match=r"^chain member 2 \(lm/410M\): distill_temperature must be positive, got "
                                        r"-1.0$"):
        load_config(ROOT / "configs" / "lm-pythia.toml", ["chain.1.distill_temperature=-1"])
    with pytest.raises(UserError, match=r"^chain member 2 \(paper/ViT-S-16\): patch_dropout must be in \[0, 1\), "
                                        r"got 1.5$"):
        load_config(ROOT / "configs" / "paper-cc3m-vit.toml", ["chain.1.patch_dropout=1.5"])
    with pytest.raises(UserError, match=r"^chain member 2 \(paper/Swin-T\): patch_dropout needs a ViT image tower "
                                        r"\(Swin models have no patch tokens to drop\)$"):
        load_config(ROOT / "configs" / "paper-cc3m-swin.toml", ["chain.1.patch_dropout=0.5"])


def test_a_paradigms_member_keys_resolve_into_the_stage() -> None:
    from compt.chain import stage_spec

    lm = load_config(ROOT / "configs" / "lm-pythia.toml", ["chain.1.distill_temperature=2.5"])
    assert type(lm.chain[1]) is LogitDistillMember and lm.chain[1].distill_temperature == 2.5
    specs = {s.key: stage_spec(lm, s, 1000) for s in plan_stages(lm, True)}
    assert {k: s.distill_temperature for k, s in specs.items()} == {k: 2.5 if k == "chain-2" else 1.0 for k in specs}
    assert len(specs) == 7                                      # 4 members, baselines 2-4 (member 1's is chain-1)
    clip = load_config(ROOT / "configs" / "paper-cc3m-vit-flip.toml")
    assert type(clip.chain[1]) is ClipMemberConfig and clip.chain[1].patch_dropout == 0.5
    specs = {s.key: stage_spec(clip, s, 1000) for s in plan_stages(clip, True)}
    assert {k: s.patch_dropout for k, s in specs.items()} == {      # baselines never drop patches
        k: 0.5 if k in ("chain-2", "chain-3", "chain-4") else 0.0 for k in specs}
    assert specs["chain-2"].train_model.vision.patch_dropout == 0.5 and specs["chain-2"].model.vision.patch_dropout == 0


@pytest.fixture
def old_lm(tmp_path: Path, monkeypatch) -> Path:
    run = tmp_path / "old-lm"
    shutil.copytree(OLD_LM, run)
    shutil.copy(OLD_LM.parent / "corpus.txt", tmp_path)
    monkeypatch.chdir(tmp_path)
    return run


def test_an_old_lm_run_directory_with_clip_keys_reads_and_keeps_its_fingerprint(old_lm: Path) -> None:
    stored = tomllib.loads((old_lm / "config.toml").read_text())
    assert stored["data"]["csv_img_key"] == "filepath"          # written then for every paradigm
    with pytest.raises(UserError, match="^cache_dir in \\[data\\] is a setting of CLIP models \\(paradigm clip\\)"):
        config_from_dict(stored)                                # as a config of its own: refused
    cfg = read_run_config(old_lm)                               # as a run directory's: read without them
    assert type(cfg.data) is LMDataConfig and cfg.data.num_samples == 16
    assert "csv_img_key" not in config_to_dict(cfg)["data"]
    stage = plan_stages(cfg, False)[0]
    old = json.loads((old_lm / "chain" / "01-lm_test-A" / "lineage.json").read_text())["fingerprint"]
    assert old["data"]["captions_per_image"] == 1 and "captions_per_image" not in fingerprint(cfg, stage)["data"]
    assert stage_changes(old, cfg, stage) == []
    more = config_from_dict({**stored | {"data": {"kind": "text", "path": "corpus.txt", "num_samples": 17,
                                                  "eval_samples": 4}}})
    assert stage_changes(old, more, plan_stages(more, False)[0]) == ["data.num_samples: 16 -> 17"]  # shared: seen


@dataclass(frozen=True, kw_only=True)
class ToyDataConfig(DataConfig):
    """The toy regression's own data settings."""

    noise: float = 0.0                 # standard deviation of the noise on the regression targets

    def check(self) -> None:
        super().check()
        if not self.noise >= 0:
            raise UserError(f"data.noise must not be negative, got {self.noise!r}")


class NoisyToy(ToyParadigm):
    data_options = ToyDataConfig


@pytest.fixture
def noisy() -> Any:
    registry.register_paradigm(NoisyToy())
    yield
    registry.unregister_paradigm("toy")


def test_a_paradigm_declares_a_data_option_that_parses_validates_fingerprints_and_is_documented(noisy: Any) -> None:
    cfg = config_from_dict({**RAW, "data": {"num_samples": 64, "noise": 0.25}})
    validate(cfg)
    assert type(cfg.data) is ToyDataConfig and cfg.data.noise == 0.25 and cfg.data.num_samples == 64
    assert config_to_dict(cfg)["data"] == {"kind": "synthetic", "path": "", "num_samples": 64, "eval_samples": 1000,
                                           "eval_path": "", "seed": 0, "noise": 0.25}
    stage = plan_stages(cfg, False)[1]
    assert fingerprint(cfg, stage)["data"]["noise"] == 0.25
    louder = config_from_dict({**RAW, "data": {"num_samples": 64, "noise": 0.5}})
    stored = json.loads(json.dumps(fingerprint(cfg, stage)))
    assert stage_changes(stored, louder, plan_stages(louder, False)[1]) == ["data.noise: 0.25 -> 0.5"]
    assert type(config_from_dict(RAW).data) is ToyDataConfig and config_from_dict(RAW).data.noise == 0.0
    with pytest.raises(UserError, match=r"^data.noise must not be negative, got -1.0$"):
        validate(config_from_dict({**RAW, "data": {"noise": -1}}))
    with pytest.raises(UserError, match=r"^noise in \[data\] is a setting of toy MLPs \(paradigm toy\); this "
                                        r"chain's models are CLIP models"):
        load_config(ROOT / "configs" / "paper-cc3m-vit.toml", ["data.noise=0.5"])
    section = [s for s in paradigm_sections() if s[0] is ToyDataConfig]
    assert [s[1] for s in section] == ["[data] of toy MLPs (paradigm `toy`)"]
    assert [(d.name, d.type, d.default) for d in field_docs(ToyDataConfig)] == [("noise", "number", "`0.0`")]
    assert "| `noise` | number | `0.0` | standard deviation of the noise on the regression targets | " \
           "`data.noise=…` |" in render()


def test_data_options_that_are_not_a_data_config_are_refused() -> None:
    class Plain(ToyParadigm):
        data_options = dict

    with pytest.raises(UserError, match="'toy' cannot be registered: data_options must be compt.settings.DataConfig "
                                        "or a subclass"):
        registry.register_paradigm(Plain())


def test_a_run_config_built_in_python_needs_its_paradigms_data_class() -> None:
    from compt.config import MemberConfig, RunConfig

    chain = (MemberConfig(model="test/A", epochs=1), MemberConfig(model="test/B", epochs=1))
    with pytest.raises(UserError, match=r"^data is a DataConfig; CLIP models read their \[data\] as "
                                        r"compt.clip.settings.ClipDataConfig \(the paradigm's data_options\)$"):
        validate(RunConfig(name="py", chain=chain, data=DataConfig(num_samples=64)))
    validate(RunConfig(name="py", chain=chain, data=ClipDataConfig(num_samples=4096, probe_samples=0)))  # shared
    wrong = (chain[0], LogitDistillMember(model="test/B", epochs=1, distill_temperature=2.0))           # members: ok
    with pytest.raises(UserError, match=r"^chain is a LogitDistillMember; CLIP models read their \[\[chain\]\] as "
                                        r"compt.clip.settings.ClipMemberConfig \(the paradigm's member_options\)$"):
        validate(RunConfig(name="py", chain=wrong, data=ClipDataConfig(num_samples=4096, probe_samples=0)))
