"""Every built-in paradigm's ``models`` module has the same names: its config class under its own name (the
paradigm's `config_class`) and the timm-style registry and factory (`MODEL_API`), which `Paradigm.build` uses."""

from __future__ import annotations

import importlib

import pytest
import torch

from compt.paradigm import BUILTIN, paradigm_named

CONFIG_NAMES = {"clip": "ClipConfig", "lm": "LMConfig"}   # each paradigm's config under its own name
SMALLEST = {"clip": "test/A", "lm": "lm/test-A"}


def _models(name: str):   # noqa: ANN202 - a module
    return importlib.import_module(BUILTIN[name].rsplit(".", 1)[0] + ".models")


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_each_models_module_has_the_same_names_and_the_paradigms_config(name: str) -> None:
    models, paradigm = _models(name), paradigm_named(name)
    assert models.MODEL_API == _models("clip").MODEL_API
    assert all(callable(getattr(models, f)) for f in models.MODEL_API)
    assert getattr(models, CONFIG_NAMES[name]) is paradigm.config_class
    assert set(models.list_families()) == set(paradigm.families())
    assert set(paradigm.model_names()) <= set(models.list_models())   # CLIP's also has upstream open_clip's


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_the_paradigm_builds_through_its_models_module(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    models, paradigm = _models(name), paradigm_named(name)
    cfg = models.get_model_config(SMALLEST[name])
    assert isinstance(cfg, paradigm.config_class) and cfg.name == SMALLEST[name]
    torch.manual_seed(0)
    built = paradigm.build(cfg)
    torch.manual_seed(0)
    created = models.create_model(SMALLEST[name])
    assert type(built) is type(created)
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), created.state_dict().values()))
    monkeypatch.setattr(models, "build_model", lambda c: ("built by models.build_model", c.name))
    assert paradigm.build(cfg) == ("built by models.build_model", cfg.name)
