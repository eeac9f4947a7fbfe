"""Decoder-only language-model configs, their registry and the Hugging Face `transformers` Llama factory.

Every LM compt trains is a plain `transformers.LlamaForCausalLM` (pre-norm RMSNorm, SwiGLU MLP, rotary
position embeddings, grouped-query attention). An `LMConfig` is the single description of its shape;
`to_hf()` turns it into the `LlamaConfig` the model is built from, and `export_pretrained` writes a folder
that `transformers.AutoModelForCausalLM.from_pretrained` loads.

This module imports `transformers` only inside the functions that build models, so configs, the registry
and the cost model work without the optional ``compt[lm]`` extra.

Families (ascending compute):
- ``lm-cpu``: ``lm/cpu-1M`` … ``lm/cpu-22M``, byte-level vocabulary (256 bytes + ``<eos>``, padded to 264),
  head dim 32, context 128, ≈ 0.8 M → 22 M parameters — trains on a laptop CPU;
- ``lm-pythia``: Pythia-like real sizes for planning (``lm/160M`` … ``lm/2.8B``; vocab 50304, context
  2048, head dim 64, GQA with 3 … 5 query heads per KV head);
- ``lm-test``: test sizes that train in seconds.

The registry and factory also go by the names every paradigm's ``models`` module has (`MODEL_API`, as
`compt.clip.models`): `get_model_config` (`get_lm_config`), `list_models` (`list_lm_models`), `list_families`
(`lm_families`), `register_family` (`register_lm_family`), `build_model` (`build_lm`, what `Paradigm.build`
calls), `create_model` (`create_lm`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.errors import UserError, unknown_name

if TYPE_CHECKING:  # configs and the registry need no torch; building does
    import torch

    from compt.lm.tokenizers import LMTokenizer


@dataclass(frozen=True, kw_only=True)
class LMConfig:
    """One Llama-style decoder: hidden width, depth, query/KV heads of a fixed head dim, SwiGLU width."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int                 # SwiGLU hidden units
    vocab_size: int = 264
    context_length: int = 128
    rope_theta: float = 10_000.0
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = True
    family: str = ""

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads:
            raise ValueError(f"{self.name}: heads {self.heads} not a multiple of kv_heads {self.kv_heads}")

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.heads // self.kv_heads

    def to_hf(self) -> Any:
        """The `transformers.LlamaConfig` of this model (no biases, SiLU gate; no special token ids)."""
        from transformers import LlamaConfig

        return LlamaConfig(**{key: getattr(self, f) for f, key in HF_NAMES.items()},
                           attention_bias=False, mlp_bias=False, hidden_act="silu",
                           bos_token_id=None, eos_token_id=None, pad_token_id=None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMConfig:
        return cls(**d)


# every shape field of an `LMConfig` and its name in a Hugging Face `LlamaConfig` / config.json
HF_NAMES = {"hidden": "hidden_size", "layers": "num_hidden_layers", "heads": "num_attention_heads",
            "kv_heads": "num_key_value_heads", "head_dim": "head_dim", "intermediate": "intermediate_size",
            "vocab_size": "vocab_size", "context_length": "max_position_embeddings", "rope_theta": "rope_theta",
            "rms_norm_eps": "rms_norm_eps", "tie_embeddings": "tie_word_embeddings"}


# ----------------------------------------------------------------------------------------------- registry
_LMS: dict[str, LMConfig] = {}
_LM_FAMILIES: dict[str, tuple[str, ...]] = {}


def register_lm_family(name: str, members: list[LMConfig]) -> None:
    """A family is an ordered (ascending compute) tuple of registered LM names."""
    for m in members:
        if m.name in _LMS and _LMS[m.name] != dataclasses.replace(m, family=name):
            raise ValueError(f"LM name {m.name!r} already registered with a different shape")
        _LMS[m.name] = dataclasses.replace(m, family=name)
    _LM_FAMILIES[name] = tuple(m.name for m in members)


def _lm(name: str, hidden: int, layers: int, heads: int, kv: int, intermediate: int, **kw: Any) -> LMConfig:
    return LMConfig(name=name, hidden=hidden, layers=layers, heads=heads, kv_heads=kv, head_dim=hidden // heads,
                    intermediate=intermediate, **kw)


# CPU family: byte-level vocabulary, head dim 32, context 128; 0.82 M, 2.4 M, 6.0 M, 21.7 M parameters.
register_lm_family("lm-cpu", [
    _lm("lm/cpu-1M", 128, 4, 4, 2, 384),
    _lm("lm/cpu-2M", 192, 6, 6, 2, 512),
    _lm("lm/cpu-6M", 256, 8, 8, 4, 704),
    _lm("lm/cpu-22M", 384, 10, 12, 4, 1024 + 512),
])

# Pythia-like real sizes (widths/depths of Pythia 160M, 410M, 1.3B, 2.8B; depth never shrinks) with Llama
# blocks and GQA, for planning. Parameter counts: 153 M, 411 M, 1.29 B, 2.78 B.
_REAL = {"vocab_size": 50_304, "context_length": 2048, "tie_embeddings": False, "rms_norm_eps": 1e-5}
register_lm_family("lm-pythia", [
    _lm("lm/160M", 768, 12, 12, 4, 2048, **_REAL),
    _lm("lm/410M", 1024, 24, 16, 4, 3328, **_REAL),
    _lm("lm/1.3B", 2048, 24, 32, 8, 5632, **_REAL),
    _lm("lm/2.8B", 2560, 32, 40, 8, 8192, **_REAL),
])

# Test sizes (seconds on CPU): byte vocabulary, context 16, head dim 8; include tied/untied and GQA changes.
_TEST = {"vocab_size": 264, "context_length": 16}
register_lm_family("lm-test", [
    _lm("lm/test-A", 16, 2, 2, 1, 32, **_TEST),
    _lm("lm/test-B", 24, 3, 3, 1, 40, **_TEST),
    _lm("lm/test-C", 32, 3, 4, 2, 48, **_TEST),
    _lm("lm/test-D", 40, 4, 5, 5, 64, **_TEST),
])


def lm_families() -> dict[str, tuple[str, ...]]:
    return dict(_LM_FAMILIES)


def list_lm_models(family: str | None = None) -> list[str]:
    if family is None:
        return list(_LMS)
    if family not in _LM_FAMILIES:
        raise unknown_name("family", family, _LM_FAMILIES)
    return list(_LM_FAMILIES[family])


def is_lm(name: str) -> bool:
    """Whether `name` is a registered language model."""
    return name in _LMS


def get_lm_config(name: str) -> LMConfig:
    if name not in _LMS:
        raise unknown_name("model", name, _LMS)
    return _LMS[name]


VOCAB_MULTIPLE = 64   # a resized vocabulary is a multiple of this (GPT-2's 50,257 ids → Pythia's 50,304)


def fit_vocab(cfg: LMConfig, ids: int) -> LMConfig:
    """`cfg` with a vocabulary that holds `ids` token ids: `cfg` itself when vocab_size ≥ ids, else a new config
    with vocab_size = ⌈ids / 64⌉ · 64 (`VOCAB_MULTIPLE`) — never smaller than cfg's own."""
    if ids <= cfg.vocab_size:
        return cfg
    return dataclasses.replace(cfg, vocab_size=-(-ids // VOCAB_MULTIPLE) * VOCAB_MULTIPLE)


def config_from_hf(path: str | Path, name: str = "") -> LMConfig:
    """The `LMConfig` of a Hugging Face Llama ``config.json`` (a folder or the file itself), named `name` (default
    ``hf:<folder>``); anything but a Llama decoder is a one-line `UserError`."""
    import json

    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path}: no Hugging Face config.json there")
    try:
        hf = json.loads(file.read_text())
    except ValueError as e:
        raise UserError(f"{file} is not valid JSON ({e})") from None
    if hf.get("model_type") != "llama":
        raise UserError(f"{file}: model_type {hf.get('model_type')!r}; compt grows Llama decoders only")
    try:   # Llama's own defaults where the file leaves a field out
        hf = {"max_position_embeddings": 2048, "rope_theta": 10_000.0, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": True, **{k: v for k, v in hf.items() if v is not None}}
        hf.setdefault("num_key_value_heads", hf["num_attention_heads"])
        hf.setdefault("head_dim", hf["hidden_size"] // hf["num_attention_heads"])
        kinds = {f.name: f.type for f in dataclasses.fields(LMConfig)}
        cast = {"int": int, "float": float, "bool": bool}
        return LMConfig(name=name or f"hf:{file.parent.name}",
                        **{f: cast[kinds[f]](hf[key]) for f, key in HF_NAMES.items()})
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"{file}: not a Llama config compt can read ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------------------------- factory
def require_transformers() -> None:
    """`UserError` with the install hint when the optional ``compt[lm]`` extra is missing."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UserError("language models need the optional extra: pip install 'compt[lm]' "
                        "(transformers, tokenizers)") from None


def build_lm(cfg: LMConfig) -> torch.nn.Module:
    """A freshly initialised `LlamaForCausalLM` for `cfg` (fp32, CPU, SDPA attention)."""
    require_transformers()
    from transformers import LlamaForCausalLM

    hf = cfg.to_hf()
    hf._attn_implementation = "sdpa"
    return LlamaForCausalLM(hf)


def create_lm(name_or_cfg: str | LMConfig, *, state_dict: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """Resolve → build → optionally load weights (strict)."""
    from compt.checkpoint import load_strict

    cfg = get_lm_config(name_or_cfg) if isinstance(name_or_cfg, str) else name_or_cfg
    return load_strict(build_lm(cfg), state_dict, cfg.name)


def export_pretrained(cfg: LMConfig, state_dict: dict[str, torch.Tensor], directory: str | Path,
                      tokenizer: LMTokenizer | None = None) -> Path:
    """Write a Hugging Face folder (config.json + safetensors [+ the `tokenizer`'s files]) loadable by
    ``transformers.AutoModelForCausalLM.from_pretrained(directory)`` (and ``AutoTokenizer``); the model's
    ``eos_token_id`` is the tokenizer's EOS."""
    from transformers.utils import logging as hf_logging

    model = create_lm(cfg, state_dict=state_dict)
    directory = Path(directory)
    hf_logging.disable_progress_bar()
    if tokenizer is not None:
        model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_id
    model.save_pretrained(directory)
    if tokenizer is not None:  # AutoTokenizer.from_pretrained(directory) reads these files
        tokenizer.save(directory)
    return directory


# the names every paradigm's models module has (`compt.clip.models.MODEL_API`), the same functions as above
MODEL_API = ("get_model_config", "list_models", "list_families", "register_family", "build_model", "create_model")
get_model_config, list_models, list_families = get_lm_config, list_lm_models, lm_families
register_family, build_model, create_model = register_lm_family, build_lm, create_lm
