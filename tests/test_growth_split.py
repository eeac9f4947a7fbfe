"""`split` growth (LEMON-style unequal splits): exact at step 0, copies and splits as the math says, symmetry breaks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_growth import assert_same_function, grown, parent_model

from compt.clip.growth import grow
from compt.clip.growth.split import SPLIT_OFFSET
from compt.clip.models import get_model_config

V = "visual.transformer.resblocks."


PAIRS = [("tiny/ViT-N", "tiny/ViT-T"), ("tiny/ViT-T", "tiny/ViT-C"), ("tiny/ViT-C", "tiny/ViT-S"),
         ("tiny/ViT-N", "tiny/ViT-C"), ("tiny/ViT-C", "tiny/ViT-M"), ("tiny/ViT-N", "tiny/ViT-B")]


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("noise", [1.0, 0.0])
def test_split_is_exact(pair: tuple[str, str], noise: float) -> None:
    """N → B copies each parent head 3 times (2 → 8 heads): repeated splits keep the sum."""
    pcfg, parent = parent_model(pair[0])
    ccfg = get_model_config(pair[1])
    assert_same_function(parent, grown(parent, pcfg, ccfg, "split", noise=noise), pcfg, ccfg)


def _alpha_ok(alpha: torch.Tensor) -> bool:
    lo, hi = SPLIT_OFFSET
    gap = (alpha - 0.5).abs()
    return bool(((gap >= lo - 1e-6) & (gap <= hi + 1e-6)).all())


def test_new_heads_and_units_copy_their_source_and_split_its_output() -> None:
    """T → C (vision 32 → 48: heads 2 → 3, MLP 128 → 192), noise 0: head 2 reads what head 0 reads, and
    O'[:, 0] = α E O[:, 0], O'[:, 2] = (1 − α) E O[:, 0] against `preserve`'s E O (same seed, same E)."""
    pcfg, parent = parent_model("tiny/ViT-T")
    ccfg = get_model_config("tiny/ViT-C")
    ref = grown(parent, pcfg, ccfg, "preserve", seed=5, noise=0.0).state_dict()
    sd = grown(parent, pcfg, ccfg, "split", seed=5, noise=0.0).state_dict()
    w2, dh = 48, 16
    for b in range(4):
        qkv = sd[f"{V}{b}.attn.in_proj_weight"]
        for k in range(3):
            assert torch.equal(qkv[k * w2 + 32:k * w2 + 48], qkv[k * w2:k * w2 + 16])
        out, out_ref = sd[f"{V}{b}.attn.out_proj.weight"], ref[f"{V}{b}.attn.out_proj.weight"]
        torch.testing.assert_close(out[:, :dh] + out[:, 2 * dh:], out_ref[:, :dh], atol=1e-6, rtol=0)
        torch.testing.assert_close(out[:, dh:2 * dh], out_ref[:, dh:2 * dh])             # head 1 not copied
        alpha = (out[:, :dh] / out_ref[:, :dh]).flatten()
        assert _alpha_ok(alpha[out_ref[:, :dh].abs().flatten() > 1e-3])
        fc, proj, proj_ref = (s[f"{V}{b}.mlp.{n}"] for s, n in ((sd, "c_fc.weight"), (sd, "c_proj.weight"),
                                                                 (ref, "c_proj.weight")))
        assert torch.equal(fc[128:], fc[:64])                                               # units 128… copy 0…
        torch.testing.assert_close(proj[:, :64] + proj[:, 128:], proj_ref[:, :64], atol=1e-6, rtol=0)
        ratio = proj[:, :64] / proj_ref[:, :64]                                           # one α per unit
        assert torch.allclose(ratio, ratio[:1].expand_as(ratio), atol=1e-4) and _alpha_ok(ratio[0])
        assert ratio[0].std() > 0.05                                                       # the αs differ


def test_inserted_blocks_are_cancelling_pairs() -> None:
    """N → T inserts vision blocks 1 and 3: unit 2i+1 reads as unit 2i and writes its negation, the block is
    the identity, yet its output projections are not zero (unlike `preserve`)."""
    pcfg, parent = parent_model("tiny/ViT-N")
    ccfg = get_model_config("tiny/ViT-T")
    child = grown(parent, pcfg, ccfg, "split", noise=0.0)
    sd = child.state_dict()
    x = torch.randn(65, 3, 32)
    for b in (1, 3):
        out = sd[f"{V}{b}.attn.out_proj.weight"]
        assert out.abs().min() > 0 and torch.equal(out[:, 16:], -out[:, :16])
        qkv = sd[f"{V}{b}.attn.in_proj_weight"]
        assert all(torch.equal(qkv[k * 32 + 16:k * 32 + 32], qkv[k * 32:k * 32 + 16]) for k in range(3))
        proj = sd[f"{V}{b}.mlp.c_proj.weight"]
        assert torch.equal(proj[:, 1::2], -proj[:, 0::2]) and proj.abs().min() > 0
        with torch.no_grad():
            torch.testing.assert_close(child.visual.transformer.resblocks[b](x), x, atol=1e-5, rtol=0)


def _step_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(1, 49408, (8, 32), generator=gen)
    logits = 20 * model.encode_image(img, normalize=True) @ model.encode_text(txt, normalize=True).T
    F.cross_entropy(logits, torch.arange(8)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_every_new_read_gets_a_gradient_at_step_0_in_ratio() -> None:
    """`preserve`'s new units and inserted blocks read with zero gradient at step 0; `split`'s all get one, and a
    copy's read gradient is (1 − α)/α times its source's (noise 0: the same activations, outputs α : 1 − α)."""
    pcfg, parent = parent_model("tiny/ViT-N")
    ccfg = get_model_config("tiny/ViT-C")                      # vision 2 → 4 blocks and 32 → 48 wide
    silent = _step_grads(grown(parent, pcfg, ccfg, "preserve"))
    child = grown(parent, pcfg, ccfg, "split", noise=0.0)
    g, sd = _step_grads(child), child.state_dict()
    assert silent[f"{V}1.attn.in_proj_weight"].abs().max() == 0
    assert silent[f"{V}0.mlp.c_fc.weight"][128:].abs().max() == 0
    assert g[f"{V}1.attn.in_proj_weight"].abs().max() > 0
    fc, proj = g[f"{V}0.mlp.c_fc.weight"], sd[f"{V}0.mlp.c_proj.weight"]
    assert fc[128:].abs().min(1).values.gt(0).any()
    ratio = proj[:, 128:].sum(0) / proj[:, :64].sum(0)          # (1 − α)/α per copied unit
    torch.testing.assert_close(fc[128:], fc[:64] * ratio[:, None], atol=1e-7, rtol=1e-3)


def test_noise_makes_copies_read_differently_and_split_is_seeded() -> None:
    pcfg, parent = parent_model("tiny/ViT-C")
    ccfg = get_model_config("tiny/ViT-S")
    a, b, c = (grow(parent.state_dict(), pcfg, ccfg, "split", seed) for seed in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)
    fc = a[f"{V}0.mlp.c_fc.weight"]                             # MLP 192 → 256: units 192… copy 0…
    assert (fc[192:] - fc[:64]).abs().max() > 1e-3

