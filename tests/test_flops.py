"""Analytic FLOPs and parameters against torch's FlopCounterMode and a real model, and the CLI output."""

import json
from dataclasses import replace

import pytest
import torch

from compt.cli import main
from compt.clip.flops import counted_flops, model_flops
from compt.clip.models import build_model, get_model_config


@pytest.mark.parametrize("name", ["test/A", "test/C", "tiny/ViT-N", "tiny/ViT-B", "test/Swin-A", "test/Swin-B"])
def test_analytic_flops_match_flop_counter(name: str) -> None:
    cfg = get_model_config(name)
    image, text = counted_flops(cfg)
    f = model_flops(cfg)
    assert f.image == pytest.approx(image, rel=1e-9) and f.text == pytest.approx(text, rel=1e-9)


@pytest.mark.parametrize("name, drop", [("test/A", 0.5), ("tiny/ViT-S", 0.5), ("tiny/ViT-N", 0.75)])
def test_patch_dropout_flops_match_flop_counter_in_training(name: str, drop: float) -> None:
    import dataclasses

    base = get_model_config(name)
    cfg = dataclasses.replace(base, vision=dataclasses.replace(base.vision, patch_dropout=drop))
    image, _ = counted_flops(cfg)                      # counted in train mode: the blocks see the kept patches
    assert model_flops(cfg).image == pytest.approx(image, rel=1e-9)
    assert model_flops(cfg).image < model_flops(base).image and model_flops(cfg).text == model_flops(base).text
    patches = (cfg.vision.image_size // cfg.vision.patch_size) ** 2
    assert cfg.vision.kept_patches == max(1, int(patches * (1 - drop)))


def test_hand_computed_test_a() -> None:
    # test/A: 16 patches of 4×4×3 → width 16; 1 block on 17 tokens (MLP ×4); projection 16→16.
    conv = 16 * 48 * 16
    block = 17 * (4 + 8) * 16 * 16 + 2 * 17 * 17 * 16
    assert model_flops(get_model_config("test/A")).image == 2 * (conv + block + 16 * 16)
    # text: 1 block on 16 tokens, EOT projection 16→16.
    assert model_flops(get_model_config("test/A")).text == 2 * (16 * 12 * 256 + 2 * 256 * 16 + 256)


@pytest.mark.parametrize("name, window", [("test/B", None), ("tiny/ViT-S", None), ("paper/ViT-T-16", None),
                                          ("test/Swin-A", None), ("test/Swin-B", None), ("paper/Swin-N", None),
                                          ("paper/Swin-S", None), ("paper/Swin-L", None),
                                          ("test/Swin-B", 12)])  # a window wider than stage 2's 8×8 tokens
def test_param_counts_match_built_model(name: str, window: int | None) -> None:
    """Analytic, also for Swin (no model is built for `compt models`): equal to the built model's count."""
    cfg = get_model_config(name)
    if window is not None:
        cfg = replace(cfg, vision=replace(cfg.vision, swin=replace(cfg.vision.swin, window_size=window)))
    with torch.device("meta"):
        model = build_model(cfg)
    f = model_flops(cfg)
    assert f.params_image == sum(p.numel() for p in model.visual.parameters())
    assert f.params == sum(p.numel() for p in model.parameters())


def test_vit_b16_matches_published_gflops() -> None:
    # open_clip's model profile lists ViT-B-16 at 41.09 GFLOPs (35.13 image + 5.96 text), 149.62 M params.
    f = model_flops(get_model_config("ViT-B-16"))
    assert f.image / 1e9 == pytest.approx(35.13, abs=0.01) and f.text / 1e9 == pytest.approx(5.96, abs=0.01)
    assert f.params / 1e6 == pytest.approx(149.62, abs=0.01)


def test_flops_cli_json(capsys) -> None:
    assert main(["flops", "ViT-B-16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"image_gflops", "text_gflops", "gflops", "params_m"}
    assert out["gflops"] == pytest.approx(out["image_gflops"] + out["text_gflops"])


def test_models_cli_lists_family(capsys) -> None:
    assert main(["models", "--family", "tiny", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["models"]
    assert [r["model"] for r in rows][:2] == ["tiny/ViT-N", "tiny/ViT-T"]
    assert all(r["gflops"] > 0 and r["params_image_m"] > 0 for r in rows)


def test_equal_flops_epochs_keeps_the_student_cost_of_the_undropped_schedule() -> None:
    from compt.clip.flops import equal_flops_epochs

    cfg = get_model_config("tiny/ViT-S")
    assert equal_flops_epochs(cfg, 24.0, 0.0) == pytest.approx(24.0)
    for captions in (1, 7):
        dropped = replace(cfg, vision=replace(cfg.vision, patch_dropout=0.5))
        e = equal_flops_epochs(cfg, 24.0, 0.5, captions)
        assert e > 24.0
        assert e * model_flops(dropped).per_sample(captions) == pytest.approx(24.0 * model_flops(cfg).per_sample(
            captions))
    # the text towers do not drop anything: with more captions the saving, and the extra epochs, shrink
    assert equal_flops_epochs(cfg, 24.0, 0.5, 7) < equal_flops_epochs(cfg, 24.0, 0.5, 1)
