"""Growth on inputs where the right rule and a plausible wrong one differ: parents whose LayerNorm biases are not
zero (CLIP `preserve` / `split` / `stack`), language-model parents with several KV heads (`compt.lm.growth`).

Every other growth test's parent has zero LayerNorm biases (open_clip's init, which `randomize` scales), so a rule
that drops or mis-scales β is exact there; and every other LM parent has one KV head, where any KV-head map is
right."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F
from helpers import trained_like
from test_growth import assert_same_function, grown, parent_model, variant

from compt.clip.growth.width import grow_embedding_ln, mean_pad_map, read_through_ln
from compt.clip.models import get_model_config
from compt.lm.growth import grow_lm, head_map, kv_copies
from compt.lm.models import create_lm, get_lm_config

LN_BIAS = re.compile(r"(ln_\w+|ln_pre|ln_post|ln_final)\.bias$")


def with_ln_biases(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Give every LayerNorm a non-zero bias β ~ 0.3·N(0, 1) (a trained parent's, not open_clip's zero init)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if LN_BIAS.search(name):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return model


# ----------------------------------------------------------------------------------------------- CLIP, LN biases
BIAS_PAIRS = {
    "width": ("tiny/ViT-C", "tiny/ViT-S"),                                    # 48 → 64, heads 3 → 4, both towers
    "width+depth+embed": ("tiny/ViT-N", variant("tiny/ViT-N", "wide-deep", vw=48, vl=4, tw=48, tl=6, embed=160)),
}


@pytest.mark.parametrize("op", ["preserve", "split"])
@pytest.mark.parametrize("pair", list(BIAS_PAIRS), ids=str)
def test_exact_growth_of_a_parent_with_layernorm_biases(op: str, pair: str) -> None:
    parent_name, child = BIAS_PAIRS[pair]
    pcfg, parent = parent_model(parent_name)
    with_ln_biases(parent)
    ccfg = child if not isinstance(child, str) else get_model_config(child)
    sd = parent.state_dict()
    assert min(sd[k].abs().max() for k in sd if LN_BIAS.search(k)) > 0.1
    child_model = grown(parent, pcfg, ccfg, op)
    assert_same_function(parent, child_model, pcfg, ccfg)
    csd = child_model.state_dict()
    # the biases were carried, not dropped: the child's LayerNorm biases are far from zero too
    assert csd["transformer.resblocks.0.ln_1.bias"].abs().max() > 0.1
    assert csd["visual.ln_post.bias"].abs().max() > 0.1


def test_stack_is_exact_with_layernorm_biases_at_equal_depth() -> None:
    pcfg, parent = parent_model("tiny/ViT-C")
    with_ln_biases(parent, seed=2)
    ccfg = get_model_config("tiny/ViT-S")
    assert_same_function(parent, grown(parent, pcfg, ccfg, "stack"), pcfg, ccfg)


@pytest.mark.parametrize("op", ["preserve", "split"])
@pytest.mark.parametrize("pair", [("tiny/ViT-C", "tiny/ViT-S"), ("tiny/ViT-N", "tiny/ViT-T")], ids=str)
def test_exact_growth_of_a_parent_with_zero_layernorm_gains(op: str, pair: tuple[str, str]) -> None:
    """Two channels of four LayerNorms have gain 0 (their β cannot be carried as β/γ), on a widened pair and on
    one that only deepens (E = I: the child's gain of such a channel is 0 too, and must not be divided by)."""
    pcfg, parent = parent_model(pair[0])
    with_ln_biases(parent)
    params = dict(parent.named_parameters())
    with torch.no_grad():
        for key in ("visual.transformer.resblocks.0.ln_1.weight", "transformer.resblocks.1.ln_2.weight",
                    "ln_final.weight", "visual.ln_post.weight"):
            params[key][[3, 7]] = 0.0
    ccfg = get_model_config(pair[1])
    assert_same_function(parent, grown(parent, pcfg, ccfg, op), pcfg, ccfg)


@pytest.mark.parametrize("op", ["preserve", "split"])
def test_exact_growth_of_a_parent_with_constant_embedding_gains(op: str) -> None:
    """ln_pre gains all 1.3 (as a fresh or a gain-tied parent has them) take the closed-form construction."""
    pcfg, parent = parent_model("tiny/ViT-C")
    with_ln_biases(parent)
    with torch.no_grad():
        parent.visual.ln_pre.weight.fill_(1.3)
    ccfg = get_model_config("tiny/ViT-S")
    assert_same_function(parent, grown(parent, pcfg, ccfg, op), pcfg, ccfg)


def test_new_embedding_gains_agree_between_the_constant_and_the_general_construction() -> None:
    """ln_pre gains c·1 take the closed-form path, c·1 + 1e-7 noise the eigen-solved one; both give the new
    channels gain √(λ_min(G)/2) = |c|/√2."""
    gen = torch.Generator().manual_seed(0)
    c, zero = 1.3, torch.zeros(8, dtype=torch.float64)
    flat = grow_embedding_ln(torch.full((8,), c, dtype=torch.float64), zero, 12, gen)
    noisy = grow_embedding_ln(c + 1e-7 * torch.randn(8, generator=gen, dtype=torch.float64), zero, 12, gen)
    torch.testing.assert_close(flat.gamma[8:], torch.full((4,), c / 2**0.5, dtype=torch.float64))
    torch.testing.assert_close(noisy.gamma[8:], flat.gamma[8:], atol=1e-5, rtol=0)


def test_read_through_ln_against_a_direct_layernorm_with_bias() -> None:
    """One LN + linear read, rewritten for the child stream E s (w 6 → 10), in float64, against
    W (γ ⊙ n(s) + β) + b computed directly: β enters the child's bias through β' = γ' ⊙ E(β/γ)."""
    gen = torch.Generator().manual_seed(0)
    w, w2, k = 6, 10, 4
    gamma = 1 + 0.3 * torch.randn(w, generator=gen, dtype=torch.float64)
    beta = 0.5 * torch.randn(w, generator=gen, dtype=torch.float64)
    weight = torch.randn(k, w, generator=gen, dtype=torch.float64)
    bias = torch.randn(k, generator=gen, dtype=torch.float64)
    e = mean_pad_map(w, w2)
    r = read_through_ln(e, gamma, beta, weight, bias)
    s = 2 * torch.randn(5, w, generator=gen, dtype=torch.float64) + 0.7
    want = F.layer_norm(s, (w,), gamma, beta) @ weight.T + bias
    got = F.layer_norm(e.embed(s), (w2,), r.gamma, r.beta) @ r.weight.double().T + r.bias
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)      # r.weight is float32
    zero_beta = read_through_ln(e, gamma, torch.zeros(w, dtype=torch.float64), weight, bias)
    assert (r.beta - zero_beta.beta).abs().max() > 0.1             # β moved the child's bias


@pytest.mark.parametrize("op", ["preserve", "split", "stack"])
def test_the_default_noise_scale_is_one(op: str) -> None:
    """`grow` (what the chain runs) uses cancelling noise of scale 1: the same weights as noise = 1.0 given
    explicitly, other weights than noise = 2.0."""
    from compt.clip.growth import GROWTH_OPS, grow

    pcfg, parent = parent_model("tiny/ViT-N")
    ccfg = get_model_config("tiny/ViT-C")
    default = grow(parent.state_dict(), pcfg, ccfg, op, seed=4)
    for noise, same in ((1.0, True), (2.0, False)):
        got = GROWTH_OPS[op](parent.state_dict(), pcfg, ccfg, generator=torch.Generator().manual_seed(4), noise=noise)
        assert all(torch.equal(default[k], got[k]) for k in default) == same, noise


def test_key_place_names_tower_and_depth() -> None:
    """(tower, depth) of open_clip keys, as `compt.inherit` reads them: the stem at −1, block i at i, the final
    norms and projections (and the logit scale, in no tower) after every block."""
    import math

    from compt.clip.growth.common import key_place

    cfg, swin = get_model_config("tiny/ViT-C"), get_model_config("test/Swin-B")      # Swin depths (2, 2)
    want = {"visual.conv1.weight": ("vision", -1.0), "token_embedding.weight": ("text", -1.0),
            "visual.transformer.resblocks.3.mlp.c_fc.weight": ("vision", 3.0),
            "transformer.resblocks.2.ln_1.bias": ("text", 2.0), "visual.ln_post.weight": ("vision", math.inf),
            "text_projection": ("text", math.inf), "logit_scale": ("", math.inf)}
    assert {k: key_place(cfg, k) for k in want} == want
    assert key_place(swin, "visual.trunk.layers.1.blocks.1.attn.qkv.weight") == ("vision", 3.0)
    assert key_place(swin, "visual.trunk.layers.1.downsample.norm.weight") == ("vision", 2.0)


def test_validation_names_a_shrinking_text_mlp_and_counts_unexpected_keys() -> None:
    from compt.clip.growth import check_state, validate_growth
    from compt.errors import UserError

    pcfg = get_model_config("tiny/ViT-S")                                       # text 64 wide, MLP ratio 4
    thin = dataclasses.replace(pcfg, name="thin", text=dataclasses.replace(pcfg.text, mlp_ratio=2.0))
    with pytest.raises(UserError, match=re.escape("text MLP width 256 -> 128 shrinks")):
        validate_growth(pcfg, thin)
    state = parent_model("tiny/ViT-S")[1].state_dict()
    with pytest.raises(UserError, match=re.escape("unexpected key a (and 1 more)")):
        check_state({**state, "a": torch.zeros(1), "b": torch.zeros(1)}, pcfg)
    with pytest.raises(UserError, match=r"unexpected key a$"):
        check_state({**state, "a": torch.zeros(1)}, pcfg)


def test_growth_leaves_the_thread_count_as_it_was() -> None:
    pcfg, parent = parent_model("tiny/ViT-N")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grown(parent, pcfg, get_model_config("tiny/ViT-T"))
        assert torch.get_num_threads() == 2                                     # one thread inside only
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------- LM, KV heads
PARENT = dataclasses.replace(get_lm_config("lm/test-C"), name="kv2")          # 4 heads on 2 KV heads (G = 2)
P6 = dataclasses.replace(PARENT, name="kv2-g3", hidden=48, heads=6, kv_heads=2, intermediate=56)   # G = 3
KV_CASES = {
    # child heads / KV heads, (child query head of each parent query head, parent KV head of each carrying child one)
    "G2->G1": (PARENT, dict(hidden=48, heads=6, kv_heads=6), ([0, 1, 2, 3], [0, 0, 1, 1])),
    "G2->G4": (PARENT, dict(hidden=64, heads=8, kv_heads=2), ([0, 1, 4, 5], [0, 1])),
    "G2->G2": (PARENT, dict(hidden=48, heads=6, kv_heads=3), ([0, 1, 2, 3], [0, 1])),
    "G3->G2": (P6, dict(hidden=64, heads=8, kv_heads=4), ([0, 1, 2, 4, 5, 6], [0, 0, 1, 1])),
}




@pytest.mark.parametrize("case", list(KV_CASES))
def test_lm_growth_carries_several_kv_heads(case: str) -> None:
    """Parent KV head j goes to child KV heads m·j … m·j+m−1 (m = ⌈G/G'⌉) and its query heads follow it; the
    maps are written out by hand, the child's k/v rows checked against them, and the logits are the parent's."""
    parent, change, (want_q, want_kv) = KV_CASES[case]
    child = dataclasses.replace(parent, name=f"child-{case}", layers=parent.layers + 1, intermediate=64, **change)
    assert head_map(parent, child) == (want_q, want_kv)
    p = trained_like(parent)
    c = grow_lm(p, parent, child, "preserve", seed=1)
    hd, d = parent.head_dim, parent.hidden
    s = (child.hidden / parent.hidden) ** 0.5
    for name in ("k_proj", "v_proj"):
        pw, cw = p[f"model.layers.0.self_attn.{name}.weight"], c[f"model.layers.0.self_attn.{name}.weight"]
        for ch, ph in enumerate(want_kv):
            torch.testing.assert_close(cw[ch * hd:(ch + 1) * hd, :d], pw[ph * hd:(ph + 1) * hd].float())
    o_p, o_c = p["model.layers.0.self_attn.o_proj.weight"], c["model.layers.0.self_attn.o_proj.weight"]
    for ph, ch in enumerate(want_q):
        torch.testing.assert_close(o_c[:d, ch * hd:(ch + 1) * hd], s * o_p[:, ph * hd:(ph + 1) * hd].float())
    ids = torch.randint(0, parent.vocab_size, (3, parent.context_length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = create_lm(parent, state_dict=p).eval()(input_ids=ids).logits
        got = create_lm(child, state_dict=c).eval()(input_ids=ids).logits
    assert (want - got).abs().max() < 1e-5 * max(1.0, want.abs().max().item())
    assert kv_copies(parent, child) * parent.kv_heads == len(want_kv)
