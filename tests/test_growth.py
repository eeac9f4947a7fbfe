"""Growth operators on CPU-size models: exact preservation, the paper's corner rule, symmetry breaking, errors."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F

from compt.clip.growth import GROWTH_OPS, check_state, grow, validate_growth
from compt.clip.growth.width import grow_embedding_ln, mean_pad_map
from compt.clip.models import ModelConfig, build_model, get_model_config, list_models
from compt.errors import UserError
from compt.growth import corner_copy, fresh_child

TOL, COS = 1e-5, 0.99999


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Make a fresh model look trained: non-constant LayerNorm gains/biases, perturbed weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if re.search(r"(ln_\w+|ln_pre|ln_post|ln_final)\.weight$", name):
                p.copy_(1 + 0.3 * noise)
            elif name != "logit_scale":
                p.add_(0.1 * noise * (p.std() if p.numel() > 1 else 1))
    return model.eval()


def parent_model(name_or_cfg: str | ModelConfig, seed: int = 0) -> tuple[ModelConfig, torch.nn.Module]:
    cfg = get_model_config(name_or_cfg) if isinstance(name_or_cfg, str) else name_or_cfg
    torch.manual_seed(seed)
    return cfg, randomize(build_model(cfg), seed)


def grown(parent: torch.nn.Module, pcfg: ModelConfig, ccfg: ModelConfig, op: str = "preserve",
          seed: int = 0, **kw) -> torch.nn.Module:
    child = build_model(ccfg)
    GROWTH_OPS[op](parent.state_dict(), pcfg, ccfg, generator=torch.Generator().manual_seed(seed),
                   fresh=child.state_dict(), **kw)
    return child.eval()


@torch.no_grad()
def embeddings(model: torch.nn.Module, cfg: ModelConfig, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    image = torch.randn(n, 3, cfg.vision.image_size, cfg.vision.image_size, generator=gen)
    text = torch.randint(1, cfg.text.vocab_size, (n, cfg.text.context_length), generator=gen)
    return model.encode_image(image, normalize=True), model.encode_text(text, normalize=True)


def assert_same_function(parent: torch.nn.Module, child: torch.nn.Module, pcfg: ModelConfig,
                         ccfg: ModelConfig) -> None:
    """Child embeddings = parent embeddings (zero-padded when the embedding grows), in float32."""
    e = pcfg.embed_dim
    for p, c in zip(embeddings(parent, pcfg), embeddings(child, ccfg), strict=True):
        assert (p - c[:, :e]).abs().max() <= TOL
        assert F.cosine_similarity(p, c[:, :e]).min() >= COS
        assert c.shape[1] == e or c[:, e:].abs().max() <= TOL


def variant(base: str, name: str, *, vw: int | None = None, vl: int | None = None, tw: int | None = None,
            tl: int | None = None, embed: int | None = None) -> ModelConfig:
    """An unregistered tiny-size config (head dim kept: heads follow the width)."""
    cfg = get_model_config(base)
    v, t = cfg.vision, cfg.text
    tw = tw or t.width
    return dataclasses.replace(
        cfg, name=name, embed_dim=embed or cfg.embed_dim,
        vision=dataclasses.replace(v, width=vw or v.width, layers=vl or v.layers),
        text=dataclasses.replace(t, width=tw, heads=tw // t.head_width, layers=tl or t.layers))


# ----------------------------------------------------------------------------------------------- preserve
TINY = list_models("tiny")


@pytest.mark.parametrize("pair", [*zip(TINY, TINY[1:]), ("tiny/ViT-N", "tiny/ViT-L"), ("tiny/ViT-T", "tiny/ViT-B"),
                                  ("tiny/ViT-C", "tiny/ViT-BL"), ("test/B", "test/C")])
def test_preserve_is_exact_on_the_tiny_family(pair: tuple[str, str]) -> None:
    pcfg, parent = parent_model(pair[0])
    ccfg = get_model_config(pair[1])
    assert_same_function(parent, grown(parent, pcfg, ccfg), pcfg, ccfg)


@pytest.mark.parametrize(("layers", "widths"), [((6, 12), (32, 48)), ((12, 24), (48, 64)), ((12, 18), (32, 80))])
def test_preserve_any_depth_ratio_on_both_towers(layers: tuple[int, int], widths: tuple[int, int]) -> None:
    (l1, l2), (w1, w2) = layers, widths
    pcfg, parent = parent_model(variant("tiny/ViT-N", "p", vw=w1, vl=l1, tw=w1, tl=l1))
    ccfg = variant("tiny/ViT-N", "c", vw=w2, vl=l2, tw=w2 + 16, tl=l2, embed=160)
    child = grown(parent, pcfg, ccfg)
    assert_same_function(parent, child, pcfg, ccfg)
    sd = child.state_dict()
    kept = {i * l2 // l1 for i in range(l1)}                      # parent block i → ⌊i L'/L⌋, identities between
    for tower in ("visual.transformer", "transformer"):
        for j in range(l2):
            zero = all(sd[f"{tower}.resblocks.{j}.{k}"].abs().max() == 0 for k in
                       ("attn.out_proj.weight", "attn.out_proj.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"))
            assert zero == (j not in kept), (tower, j)


def test_exact_for_non_integer_ratio_with_trained_embedding_ln() -> None:
    """768 → 1024 (ratio 4/3) with non-constant ln_pre gains: the solved map is LN-compatible and exact."""
    gen = torch.Generator().manual_seed(0)
    w, w2 = 768, 1024
    gamma = (1 + 0.3 * torch.randn(w, generator=gen)).double()
    beta = 0.2 * torch.randn(w, generator=gen).double()
    res = grow_embedding_ln(gamma, beta, w2, gen)
    e = res.stream.matrix
    assert torch.allclose(e.T @ e, (w2 / w) * torch.eye(w, dtype=e.dtype), atol=1e-9)

    def ln(x: torch.Tensor, g: torch.Tensor | float = 1.0, b: torch.Tensor | float = 0.0) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=1e-5) * g + b

    x = 3 * torch.randn(16, w, generator=gen, dtype=torch.float64) + 1
    parent_out = ln(x, gamma, beta)
    child_out = ln(x @ res.input_map.T, res.gamma, res.beta)
    assert (ln(child_out) - ln(res.stream.embed(parent_out))).abs().max() < 1e-10  # every later LN agrees
    mp = mean_pad_map(w, w2).matrix
    assert torch.allclose(mp.T @ mp, (w2 / w) * torch.eye(w, dtype=mp.dtype), atol=1e-12)


def test_stack_widens_exactly_and_copies_blocks() -> None:
    pcfg, parent = parent_model("tiny/ViT-S")
    assert_same_function(parent, grown(parent, pcfg, get_model_config("tiny/ViT-B"), "stack"),
                         pcfg, get_model_config("tiny/ViT-B"))
    ccfg = variant("tiny/ViT-S", "deep", vl=8, tl=6)
    sd = grown(parent, pcfg, ccfg, "stack").state_dict()
    for tower, n in (("visual.transformer", 4), ("transformer", 4)):
        for key in ("ln_1.weight", "attn.out_proj.weight", "mlp.c_proj.bias"):
            assert torch.equal(sd[f"{tower}.resblocks.{n}.{key}"], sd[f"{tower}.resblocks.0.{key}"])


def test_growth_is_deterministic_in_the_seed() -> None:
    pcfg, parent = parent_model("tiny/ViT-S")
    ccfg = get_model_config("tiny/ViT-M")
    a, b, c = (grow(parent.state_dict(), pcfg, ccfg, "preserve", seed) for seed in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_symmetry_breaks_and_every_parameter_gets_a_gradient() -> None:
    pcfg, parent = parent_model("tiny/ViT-BL")
    ccfg = get_model_config("tiny/ViT-L")                       # vision 192×4 → 256×6, text heads 8 → 8
    child = grown(parent, pcfg, ccfg)
    child.train()
    key = "visual.transformer.resblocks.0.ln_1.weight"
    w = pcfg.vision.width
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(child.parameters(), lr=1e-3)
    got_grad = {n: False for n, _ in child.named_parameters()}
    for _ in range(3):
        img = torch.randn(8, 3, 32, 32, generator=gen)
        txt = torch.randint(1, 49408, (8, 32), generator=gen)
        logits = child.logit_scale.exp() * child.encode_image(img, normalize=True) @ \
            child.encode_text(txt, normalize=True).T
        labels = torch.arange(8)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad()
        loss.backward()
        for n, p in child.named_parameters():
            got_grad[n] |= bool(p.grad is not None and p.grad.abs().max() > 0)
        opt.step()
    assert all(got_grad.values()), [n for n, g in got_grad.items() if not g]
    sd = child.state_dict()
    new_gain = sd[key][w:]
    assert new_gain.unique().numel() == new_gain.numel()                      # new stream channels differ
    hidden = int(w * 4)
    cols = sd["visual.transformer.resblocks.0.mlp.c_proj.weight"][:, hidden:]   # new hidden units, zero at step 0
    assert cols.abs().min(0).values.gt(0).all() and torch.pdist(cols.T).min() > 0
    for j in (1, 3):                                                            # identity blocks started at zero
        assert sd[f"visual.transformer.resblocks.{j}.attn.out_proj.weight"].abs().max() > 0


def test_text_stream_symmetry_breaks() -> None:
    """Text width 64 → 80: the 16 new channels start as identical copies of the mean, then diverge."""
    pcfg, parent = parent_model("tiny/ViT-S")
    ccfg = get_model_config("tiny/ViT-M")
    child = grown(parent, pcfg, ccfg)
    gain, rows = "transformer.resblocks.0.ln_1.weight", "transformer.resblocks.0.attn.out_proj.weight"
    assert child.state_dict()[gain][64:].unique().numel() == 1
    assert torch.pdist(child.state_dict()[rows][64:]).max() == 0
    opt = torch.optim.AdamW(child.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        txt = torch.randint(1, 49408, (8, 32), generator=gen)
        img = torch.randn(8, 3, 32, 32, generator=gen)
        logits = child.encode_image(img, normalize=True) @ child.encode_text(txt, normalize=True).T
        loss = F.cross_entropy(20 * logits, torch.arange(8))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert child.state_dict()[gain][64:].unique().numel() == ccfg.text.width - 64 == 16
    assert torch.pdist(child.state_dict()[rows][64:]).min() > 0


# ----------------------------------------------------------------------------------------------- corner
def test_corner_copy_hand_made() -> None:
    dst = torch.full((4, 5), -1.0)
    corner_copy(dst, torch.arange(6.0).reshape(2, 3))
    assert torch.equal(dst[:2, :3], torch.arange(6.0).reshape(2, 3)) and (dst[2:] == -1).all() and \
        (dst[:, 3:] == -1).all()
    conv = torch.zeros(6, 3, 2, 2)
    corner_copy(conv, torch.ones(4, 3, 2, 2))
    assert conv[:4].eq(1).all() and conv[4:].eq(0).all()
    vec = torch.zeros(5)
    corner_copy(vec, torch.tensor([1.0, 2.0]))
    assert vec.tolist() == [1, 2, 0, 0, 0]


def test_corner_reproduces_the_official_rule_key_by_key() -> None:
    pcfg, parent = parent_model("test/B")                       # vision 24×2, text 16/2 ×2, embed 16
    ccfg = variant("test/C", "wide-deep", vl=4, tl=3)           # vision 32×4 (= 2× depth), text 24/3 ×3, embed 24
    ps = parent.state_dict()
    out = grow(ps, pcfg, ccfg, "corner", seed=7)
    fresh = fresh_child(ccfg, torch.Generator().manual_seed(7), build_model)
    written: dict[str, list[str]] = {}
    for k in ps:
        m = re.match(r"visual\.transformer\.resblocks\.(\d+)\.(.*)", k)
        written[k] = [f"visual.transformer.resblocks.{j}.{m[2]}" for j in (2 * int(m[1]), 2 * int(m[1]) + 1)] \
            if m else [k]
    targets = {t for ts in written.values() for t in ts}
    for k, ts in written.items():
        for t in ts:
            region = tuple(slice(0, n) for n in ps[k].shape)
            assert torch.equal(out[t][region], ps[k]), (k, t)
            rest = torch.ones_like(out[t], dtype=torch.bool)
            rest[region] = False
            assert torch.equal(out[t][rest], fresh[t][rest]), t              # untouched: fresh init
    for t in set(out) - targets:                                             # e.g. text block 2
        assert torch.equal(out[t], fresh[t]), t
    assert "transformer.resblocks.2.ln_1.weight" not in targets
    # the defect, on purpose: the parent's k rows (24:48) land in the child's q block (0:32) and k block
    qkv = out["visual.transformer.resblocks.0.attn.in_proj_weight"]
    assert torch.equal(qkv[24:32, :24], ps["visual.transformer.resblocks.0.attn.in_proj_weight"][24:32])
    assert torch.equal(out["logit_scale"], ps["logit_scale"])


def test_corner_is_not_function_preserving() -> None:
    pcfg, parent = parent_model("tiny/ViT-S")
    ccfg = get_model_config("tiny/ViT-B")
    (pi, pt), (ci, ct) = embeddings(parent, pcfg), embeddings(grown(parent, pcfg, ccfg, "corner"), ccfg)
    assert F.cosine_similarity(pi, ci).min() < 0.999 and F.cosine_similarity(pt, ct).min() < 0.99


def test_swin_corner_and_stage_depth_rule() -> None:
    pcfg, parent = parent_model("test/Swin-A")                 # depths (1, 1) → (2, 2), text 16 → 24
    ccfg = get_model_config("test/Swin-B")
    ps = parent.state_dict()
    out = grow(ps, pcfg, ccfg, "corner", seed=1)
    fresh = fresh_child(ccfg, torch.Generator().manual_seed(1), build_model)
    for k, v in ps.items():                                    # stage s block b → stage s block b
        assert torch.equal(out[k][tuple(slice(0, n) for n in v.shape)], v), k
    table = "visual.trunk.layers.1.blocks.0.attn.relative_position_bias_table"
    assert out[table].shape == ps[table].shape                 # (window² grid, heads): heads kept per stage
    for k in out:
        if ".blocks.1." in k:                                  # added blocks keep their fresh init
            assert torch.equal(out[k], fresh[k]), k
    for op in ("preserve", "stack", "split"):
        with pytest.raises(UserError, match="does not support Swin"):
            grow(ps, pcfg, ccfg, op)
    child = build_model(ccfg)
    child.load_state_dict(out)                                 # loads and runs
    embeddings(child.eval(), ccfg)


# ----------------------------------------------------------------------------------------------- errors
def _cfg(base: str, **kw) -> ModelConfig:
    cfg = get_model_config(base)
    vision = dataclasses.replace(cfg.vision, **{k[2:]: v for k, v in kw.items() if k.startswith("v_")})
    text = dataclasses.replace(cfg.text, **{k[2:]: v for k, v in kw.items() if k.startswith("t_")})
    return dataclasses.replace(cfg, name=f"{base}-x", vision=vision, text=text)


@pytest.mark.parametrize(("parent", "child", "message"), [
    ("tiny/ViT-S", "tiny/ViT-C", "vision width 64 -> 48 shrinks"),
    ("tiny/ViT-T", "tiny/ViT-N", "vision depth 4 -> 2 shrinks"),
    ("tiny/ViT-M", _cfg("tiny/ViT-B", t_width=64, t_heads=4), "text width 80 -> 64 shrinks"),
    ("tiny/ViT-S", _cfg("tiny/ViT-B", v_patch_size=8), "patch size 4 -> 8 differs"),
    ("tiny/ViT-S", _cfg("tiny/ViT-B", v_head_width=32), "vision head dim 16 -> 32 differs"),
    ("tiny/ViT-S", _cfg("tiny/ViT-B", t_heads=3), "text head dim 16 -> 32 differs"),
    ("tiny/ViT-S", _cfg("tiny/ViT-B", v_image_size=64), "image size 32 -> 64 differs"),
    ("tiny/ViT-S", _cfg("tiny/ViT-B", t_context_length=64), "context length 32 -> 64 differs"),
    ("test/C", "test/Swin-B", "cannot grow a ViT vision tower"),
    ("test/Swin-B", "test/Swin-A", "Swin stage 0 depth 2 -> 1 shrinks"),
    ("paper/ViT-BL-16", "paper/ViT-B-16", "vision width 1024 -> 768 shrinks"),
])
def test_invalid_growth_is_refused(parent: str, child: str | ModelConfig, message: str) -> None:
    ccfg = child if isinstance(child, ModelConfig) else get_model_config(child)
    with pytest.raises(UserError, match=re.escape(message)):
        validate_growth(get_model_config(parent), ccfg)


def test_parent_state_must_match_its_config() -> None:
    cfg = get_model_config("tiny/ViT-S")
    sd = dict(build_model(get_model_config("tiny/ViT-C")).state_dict())
    with pytest.raises(UserError, match=r"tiny/ViT-S: positional_embedding has shape \[32, 48\], expected \[32, 64\]"):
        grow(sd, cfg, get_model_config("tiny/ViT-B"), "preserve")
    good = dict(build_model(cfg).state_dict())
    with pytest.raises(UserError, match="missing key logit_scale"):
        check_state({k: v for k, v in good.items() if k != "logit_scale"}, cfg)
    with pytest.raises(UserError, match="unexpected key extra.weight"):
        check_state({**good, "extra.weight": torch.zeros(1)}, cfg)
    with pytest.raises(UserError, match="unknown growth operator 'grw'"):
        grow(good, cfg, get_model_config("tiny/ViT-B"), "grw")
