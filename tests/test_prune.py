"""Pruning down (``growth = "prune"``, `compt prune`): the criteria, exactness, growing back, refusals, down-chains."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from compt.checkpoint import save_checkpoint
from compt.cli import main
from compt.clip.growth import grow
from compt.clip.models import ModelConfig, create_model, get_model_config
from compt.clip.prune import prune_clip_model, validate_clip_prune
from compt.config import config_from_dict, validate
from compt.errors import UserError
from compt.growth import identity_depth
from compt.lm.growth import grow_lm, head_map
from compt.lm.models import LMConfig, create_lm, get_lm_config
from compt.lm.prune import prune_lm_model, select_lm
from compt.prune import Means, calibration_batch, keep


def lm_pair() -> tuple[LMConfig, LMConfig]:
    parent = LMConfig(name="p", hidden=32, layers=3, heads=4, kv_heads=2, head_dim=8, intermediate=48,
                      vocab_size=264, context_length=16)
    return parent, dataclasses.replace(parent, name="c", layers=2, heads=2, kv_heads=1, intermediate=40)


def clip_pair() -> tuple[ModelConfig, ModelConfig]:
    parent = dataclasses.replace(get_model_config("test/B"), name="p")
    vision = dataclasses.replace(parent.vision, layers=1, mlp_ratio=3.0)
    text = dataclasses.replace(parent.text, layers=1, mlp_ratio=3.0)
    return parent, dataclasses.replace(parent, name="c", embed_dim=12, vision=vision, text=text)


def tokens(n: int = 24) -> list[torch.Tensor]:
    return [torch.randint(0, 256, (n, 17), generator=torch.Generator().manual_seed(1)), torch.arange(n)]


def clip_batch(n: int = 12) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
            torch.randint(1, 400, (n, 1, 16), generator=g), torch.arange(n)]


# ----------------------------------------------------------------------------------------------- criteria
def test_keep_takes_the_largest_in_their_order_ties_to_the_lower_index() -> None:
    assert keep(torch.tensor([1.0, 3.0, 3.0, 0.0, 2.0]), 2).tolist() == [1, 2]
    assert keep(torch.tensor([5.0, 1.0, 4.0, 4.0]), 3).tolist() == [0, 2, 3]
    assert keep(torch.tensor([0.0, 0.0, 0.0]), 1).tolist() == [0]


def test_block_importance_is_one_minus_the_mean_cosine() -> None:
    x = torch.randn(2, 5, 4)
    y = torch.randn(2, 5, 4)
    m = Means()
    m.add_block("b", x, y)
    naive = sum(1 - float(x[b, t] @ y[b, t] / (x[b, t].norm() * y[b, t].norm())) for b in range(2) for t in range(5))
    assert float(m.mean("b")) == pytest.approx(naive / 10, rel=1e-6)
    m.add_block("same", x, 3 * x)
    assert float(m.mean("same")) == pytest.approx(0.0, abs=1e-12)


def test_lm_head_and_unit_importance_match_a_naive_forward() -> None:
    parent, _ = lm_pair()
    model = create_lm(parent).eval()
    batch = tokens(4)
    from compt.lm.prune import measure_lm

    got = measure_lm(model, parent, batch)
    seen = {}
    layer = model.model.layers[1]
    h1 = layer.self_attn.o_proj.register_forward_pre_hook(lambda _m, a: seen.__setitem__("o", a[0]))
    h2 = layer.mlp.down_proj.register_forward_pre_hook(lambda _m, a: seen.__setitem__("a", a[0]))
    with torch.no_grad():
        model(input_ids=batch[0][:, :-1])
    h1.remove()
    h2.remove()
    heads = torch.stack([seen["o"][..., h * 8:(h + 1) * 8].norm(dim=-1).mean() for h in range(parent.heads)])
    assert torch.allclose(got["heads"][1].float(), heads, rtol=1e-5)
    assert torch.allclose(got["mlp"][1].float(), seen["a"].abs().mean((0, 1)), rtol=1e-5)


def test_clip_head_importance_matches_open_clips_attention_with_an_identity_output_projection() -> None:
    """A(h) = m(‖o_h‖₂) against nn.MultiheadAttention's own output when out_proj is the identity (then its output is
    the heads' outputs side by side); the text tower's causal mask included."""
    from compt.clip.data.images import to_model_input
    from compt.clip.prune import measure_clip

    parent, _ = clip_pair()
    model = create_model(parent).eval()
    batch = clip_batch(4)
    got = measure_clip(model, parent, batch)
    seen = {}
    for tower, block in (("vision", model.visual.transformer.resblocks[1]), ("text", model.transformer.resblocks[1])):
        with torch.no_grad():
            block.attn.out_proj.weight.copy_(torch.eye(block.attn.embed_dim))
            block.attn.out_proj.bias.zero_()
        block.attn.register_forward_hook(lambda _m, _a, out, tower=tower: seen.__setitem__(tower, out[0]))
    with torch.no_grad():
        model.encode_image(to_model_input(batch[0]))
        model.encode_text(batch[1][:, 0])
    for tower, heads in (("vision", 3), ("text", 2)):
        o = seen[tower].unflatten(-1, (heads, 8)).norm(dim=-1).mean((0, 1))
        assert torch.allclose(got[f"{tower}.heads"][1].float(), o, rtol=1e-5), tower


def test_gqa_keeps_the_kv_groups_of_largest_summed_head_importance_whole() -> None:
    """Group 0's heads (0.8, 1.2) sum above group 1's (1.5, 0.0), though group 1 holds the single largest head."""
    parent, _ = lm_pair()
    child = dataclasses.replace(parent, name="c", layers=1, heads=1, kv_heads=1, hidden=16, intermediate=2)
    importance = {"heads": torch.tensor([[0.8, 1.2, 1.5, 0.0]] * 3), "mlp": torch.arange(48.0).repeat(3, 1),
                  "channels": -torch.arange(32.0), "blocks": torch.tensor([0.1, 0.3, 0.2])}
    kept = select_lm(importance, parent, child)
    assert kept == {"layers": [1], "channels": list(range(16)), "groups": [[0]], "heads": [[1]], "units": [[46, 47]]}


# ----------------------------------------------------------------------------------------------- determinism
def test_pruning_is_deterministic_for_a_seed_and_a_calibration_batch() -> None:
    windows = [(torch.randint(0, 256, (17,), generator=torch.Generator().manual_seed(i)), i) for i in range(40)]
    a, b, other = (calibration_batch(windows, s, 16) for s in (3, 3, 4))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], other[0])
    parent, child = get_lm_config("lm/test-C"), get_lm_config("lm/test-A")
    state = create_lm(parent).state_dict()
    (s1, r1), (s2, r2) = (prune_lm_model(state, parent, child, a) for _ in range(2))
    assert r1["kept"] == r2["kept"] and all(torch.equal(s1[k], s2[k]) for k in s1)


# ----------------------------------------------------------------------------------------------- exactness
def test_pruning_removed_zero_units_reproduces_the_llama_exactly() -> None:
    """KV group 1 has zero values (its query heads output 0), units ≥ 40 have zero up rows, layer 1 is an
    identity: the pruned model computes the parent's logits."""
    parent, child = lm_pair()
    state = {k: v.clone() for k, v in create_lm(parent).state_dict().items()}
    for i in range(parent.layers):
        state[f"model.layers.{i}.self_attn.v_proj.weight"][8:16] = 0
        state[f"model.layers.{i}.mlp.up_proj.weight"][40:] = 0
    for name in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
        state[f"model.layers.1.{name}"].zero_()
    pruned, record = prune_lm_model(state, parent, child, tokens())
    assert record["kept"]["layers"] == [0, 2] and record["kept"]["groups"] == [[0], [0]]
    assert record["kept"]["units"] == [list(range(40))] * 2
    ids = tokens(3)[0][:, :-1]
    with torch.no_grad():
        want = create_lm(parent, state_dict=state)(input_ids=ids).logits
        got = create_lm(child, state_dict=pruned)(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5)


def test_pruning_removed_zero_units_reproduces_the_clip_towers_exactly() -> None:
    """Block 0 of each tower is an identity, units ≥ 3/4 of block 1's MLP never fire and embedding dims ≥ 12 are
    zero: the pruned model's image and text features are the parent's."""
    parent, child = clip_pair()
    state = {k: v.clone() for k, v in create_model(parent).state_dict().items()}
    for prefix, hidden in (("visual.transformer.resblocks.", 72), ("transformer.resblocks.", 48)):
        for name in ("attn.out_proj.weight", "attn.out_proj.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"):
            state[f"{prefix}0.{name}"].zero_()
        state[f"{prefix}1.mlp.c_fc.weight"][hidden:] = 0
        state[f"{prefix}1.mlp.c_fc.bias"][hidden:] = 0
    state["visual.proj"][:, 12:] = 0          # embedding dims 12…15 are zero in both towers' features
    state["text_projection"][:, 12:] = 0
    batch = clip_batch()
    pruned, record = prune_clip_model(state, parent, child, batch)
    assert record["kept"]["embed"] == list(range(12))
    assert record["kept"]["vision"]["layers"] == [1] and record["kept"]["vision"]["units"] == [list(range(72))]
    assert record["kept"]["text"]["layers"] == [1] and record["kept"]["text"]["units"] == [list(range(48))]
    from compt.clip.data.images import to_model_input

    a, b = create_model(parent, state_dict=state).eval(), create_model(child, state_dict=pruned).eval()
    with torch.no_grad():
        images = to_model_input(batch[0])
        assert torch.allclose(b.encode_image(images), a.encode_image(images)[:, :12], atol=1e-5)
        assert torch.allclose(b.encode_text(batch[1][:, 0]), a.encode_text(batch[1][:, 0])[:, :12], atol=1e-5)


# ----------------------------------------------------------------------------------------------- growing back
def test_pruning_then_growing_back_with_preserve_reproduces_the_kept_llama_units() -> None:
    parent, child = get_lm_config("lm/test-C"), get_lm_config("lm/test-A")
    state = create_lm(parent).state_dict()
    pruned, record = prune_lm_model(state, parent, child, tokens())
    kept = record["kept"]
    back = grow_lm(pruned, child, parent, "preserve", seed=0)
    c, s = torch.tensor(kept["channels"]), math.sqrt(parent.hidden / child.hidden)
    q_map, _ = head_map(child, parent)
    rows = lambda heads: torch.tensor([h * 8 + r for h in heads for r in range(8)])  # noqa: E731
    for pos, src in enumerate(identity_depth(child.layers, parent.layers)):
        if src is None:
            continue
        old, new = f"model.layers.{kept['layers'][src]}.", f"model.layers.{pos}."
        q_old = state[old + "self_attn.q_proj.weight"][rows(kept["heads"][src])][:, c]
        assert torch.equal(back[new + "self_attn.q_proj.weight"][rows(q_map)][:, :child.hidden], q_old)
        u = torch.tensor(kept["units"][src])
        assert torch.equal(back[new + "mlp.up_proj.weight"][: child.intermediate, : child.hidden],
                           state[old + "mlp.up_proj.weight"][u][:, c])
        assert torch.allclose(back[new + "mlp.down_proj.weight"][: child.hidden, : child.intermediate],
                              s * state[old + "mlp.down_proj.weight"][c][:, u])
    embed = "model.embed_tokens.weight"
    assert torch.allclose(back[embed][:, : child.hidden], s * state[embed][:, c])


def test_pruning_then_growing_back_with_preserve_reproduces_the_kept_clip_blocks() -> None:
    parent, child = clip_pair()
    state = create_model(parent).state_dict()
    pruned, record = prune_clip_model(state, parent, child, clip_batch())
    back = grow(pruned, child, parent, "preserve", seed=0)
    for tower, prefix, hidden in (("vision", "visual.transformer.resblocks.", 72),
                                  ("text", "transformer.resblocks.", 48)):
        kept = record["kept"][tower]
        pos = identity_depth(1, 2).index(0)
        u = torch.tensor(kept["units"][0])
        old, new = f"{prefix}{kept['layers'][0]}.", f"{prefix}{pos}."
        assert torch.allclose(back[new + "mlp.c_fc.weight"][:hidden], state[old + "mlp.c_fc.weight"][u], atol=1e-6)
        assert torch.allclose(back[new + "mlp.c_proj.weight"][:, :hidden], state[old + "mlp.c_proj.weight"][:, u],
                              atol=1e-6)
        assert torch.allclose(back[new + "attn.in_proj_weight"], state[old + "attn.in_proj_weight"], atol=1e-6)


# ----------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("chain, match", [
    ([{"model": "lm/test-A", "epochs": 1}, {"model": "lm/test-C", "epochs": 1, "growth": "prune"}], "grows"),
    ([{"model": "lm/test-C", "epochs": 1}, {"model": "lm/test-B", "epochs": 1, "growth": "prune"}],
     "query heads per KV head must not grow"),
    ([{"model": "lm/test-C", "epochs": 1}, {"model": "lm/test-A", "epochs": 1, "growth": "prunes"}],
     "unknown growth operator 'prunes'"),
    ([{"model": "lm/test-C", "epochs": 1}, {"model": "lm/test-A", "epochs": 1, "growth": "preserve"}],
     "not ascending in compute"),
])
def test_bad_down_chains_are_one_line_errors(chain: list[dict], match: str) -> None:
    cfg = config_from_dict({"name": "x", "data": {"kind": "text"}, "train": {"batch_size": 4}, "chain": chain})
    with pytest.raises(UserError, match=match) as e:
        validate(cfg)
    assert "\n" not in str(e.value)


def test_clip_prune_refuses_a_larger_target_and_heads_that_do_not_divide() -> None:
    cfg = config_from_dict({"name": "x", "train": {"batch_size": 4}, "chain": [
        {"model": "test/B", "epochs": 1}, {"model": "test/C", "epochs": 1, "growth": "prune"}]})
    with pytest.raises(UserError, match="vision width 24 -> 32 grows"):
        validate(cfg)
    parent, child = clip_pair()
    narrow = dataclasses.replace(child, text=dataclasses.replace(child.text, width=12, heads=2))
    with pytest.raises(UserError, match="text head dim differs"):
        validate_clip_prune(parent, narrow)
    odd = dataclasses.replace(child, text=dataclasses.replace(child.text, width=12, heads=5))
    with pytest.raises(UserError, match="does not divide into its 5 heads"):
        validate_clip_prune(parent, odd)


def test_a_chain_may_mix_pruned_and_grown_members() -> None:
    validate(config_from_dict({"name": "x", "train": {"batch_size": 4}, "chain": [
        {"model": "test/B", "epochs": 1}, {"model": "test/A", "epochs": 1, "growth": "prune"},
        {"model": "test/C", "epochs": 1, "growth": "preserve"}]}))


def test_compt_prune_refuses_before_reading_any_data(tmp_path: Path, capsys) -> None:
    big = tmp_path / "b.pt"
    save_checkpoint(big, state_dict=create_model("test/B").state_dict(), model_config=get_model_config("test/B"))
    code = main(["prune", "--from", str(big), "--to", "test/C", "--out", str(tmp_path / "c" / "c.pt"),
                 "--data", "csv", "--data-path", str(tmp_path / "missing.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "vision width 24 -> 32 grows" in err and "\n" not in err
    assert not (tmp_path / "c").exists()
