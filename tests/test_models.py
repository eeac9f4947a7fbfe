"""Registry: names, families, shapes from SPEC §6, open_clip compatibility, forward/backward for tiny sizes."""

import open_clip
import pytest
import torch

from compt.clip.models import (
    ModelConfig,
    build_model,
    create_model,
    family_members,
    get_model_config,
    list_models,
    write_open_clip_config,
)
from compt.errors import UserError

PAPER = {  # name: (vision width, layers, text width, heads, embed)
    "paper/ViT-N-16": (192, 6, 256, 4, 512), "paper/ViT-T-16": (192, 12, 256, 4, 512),
    "paper/ViT-C-16": (256, 12, 320, 5, 512), "paper/ViT-S-16": (384, 12, 384, 6, 512),
    "paper/ViT-M-16": (512, 12, 448, 7, 512), "paper/ViT-B-16": (768, 12, 512, 8, 512),
    "paper/ViT-BL-16": (1024, 12, 768, 12, 768), "paper/ViT-L-16": (1024, 24, 768, 12, 512),
}


@pytest.mark.parametrize("name", PAPER)
def test_paper_family_shapes(name: str) -> None:
    c = get_model_config(name)
    assert (c.vision.width, c.vision.layers, c.text.width, c.text.heads, c.embed_dim) == PAPER[name]
    assert (c.vision.patch_size, c.vision.image_size, c.text.layers) == (16, 224, 12)
    assert c.vision.heads == c.vision.width // 64
    assert c.text.context_length == 77 and c.text.vocab_size == 49408


def test_upstream_names_keep_upstream_shapes() -> None:
    assert get_model_config("ViT-S-16").embed_dim == 384 and get_model_config("paper/ViT-S-16").embed_dim == 512
    assert get_model_config("ViT-L-16").embed_dim == 768 and get_model_config("paper/ViT-L-16").embed_dim == 512
    assert get_model_config("ViT-B-16").to_open_clip() == get_model_config("paper/ViT-B-16").to_open_clip()
    assert get_model_config("ViT-B-16").family == "open_clip"


def test_families_are_ordered_and_tiny_has_six_plus() -> None:
    tiny = family_members("tiny")
    assert len(tiny) >= 6
    assert all(get_model_config(n).vision.image_size == 32 and get_model_config(n).vision.patch_size == 4 for n in tiny)
    widths = [get_model_config(n).vision.width for n in tiny]
    assert widths == sorted(widths) and widths[0] <= 32 and widths[-1] >= 256
    assert "test/A" in list_models("test") and "paper/Swin-T" in list_models("paper-swin")


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(UserError, match="did you mean.*ViT-S-16"):
        get_model_config("paper/ViT-S-61")


@pytest.mark.parametrize("name", [*family_members("test"), *family_members("test-swin"), "tiny/ViT-N", "tiny/ViT-S"])
def test_forward_backward_every_param_gets_grad(name: str) -> None:
    cfg = get_model_config(name)
    model = build_model(cfg)
    img = torch.randn(3, 3, cfg.vision.image_size, cfg.vision.image_size)
    txt = torch.randint(1, 1000, (3, cfg.text.context_length))
    img_f, txt_f, scale = model(img, txt)
    assert img_f.shape == txt_f.shape == (3, cfg.embed_dim)
    torch.testing.assert_close(img_f.norm(dim=-1), torch.ones(3))
    (img_f @ txt_f.T * scale).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_config_round_trip_and_frozen() -> None:
    cfg = get_model_config("test/Swin-B")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(AttributeError, match="cannot assign"):
        cfg.embed_dim = 3  # type: ignore[misc]


def test_weights_of_wrong_shape_are_a_user_error() -> None:
    sd = build_model(get_model_config("test/A")).state_dict()
    with pytest.raises(UserError, match="do not fit model test/B"):
        create_model("test/B", state_dict=sd)


def test_open_clip_builds_our_config_from_local_dir(tmp_path) -> None:
    cfg = get_model_config("test/B")
    model = build_model(cfg)
    write_open_clip_config(cfg, tmp_path)
    torch.save(model.state_dict(), tmp_path / "open_clip_model.pth")
    loaded = open_clip.create_model(f"local-dir:{tmp_path}")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
