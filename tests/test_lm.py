"""Language-model core: registry, FLOPs, exact growth, distillation losses and tasks, Hugging Face export."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from helpers import trained_like

from compt.errors import UserError
from compt.lm.flops import counted_lm_flops, lm_flops
from compt.lm.growth import grow_lm, head_map, lm_expected_shapes
from compt.lm.losses import hidden_mse_loss, lm_loss, token_kl_loss
from compt.lm.models import build_lm, create_lm, export_pretrained, get_lm_config, list_lm_models, lm_families
from compt.lm.task import build_lm_task

A, B, C = (get_lm_config(f"lm/test-{x}") for x in "ABC")




def logits(cfg, state, ids):
    with torch.no_grad():
        return create_lm(cfg, state_dict=state).eval()(input_ids=ids).logits


# ----------------------------------------------------------------------------------------------- registry, FLOPs
def test_families_ascend_and_have_fixed_head_dim():
    for fam, names in lm_families().items():
        cfgs = [get_lm_config(n) for n in names]
        assert len({c.head_dim for c in cfgs}) == 1, fam
        flops = [lm_flops(c).forward for c in cfgs]
        assert flops == sorted(flops) and len(set(flops)) == len(flops), fam
    sizes = [lm_flops(get_lm_config(n)).params for n in list_lm_models("lm-cpu")]
    assert 0.5e6 < sizes[0] < 1.5e6 and 15e6 < sizes[-1] < 25e6


@pytest.mark.parametrize("name", ["lm/test-A", "lm/test-C", "lm/cpu-1M"])
def test_analytic_flops_match_flop_counter(name):
    cfg = get_lm_config(name)
    assert lm_flops(cfg).forward == counted_lm_flops(cfg)


@pytest.mark.parametrize("name", list_lm_models())
def test_param_count_matches_module(name):
    cfg = get_lm_config(name)
    with torch.device("meta"):
        model = build_lm(cfg)
    assert lm_flops(cfg).params == sum(p.numel() for p in model.parameters())


def test_train_flops_is_6nd_plus_attention():
    cfg = get_lm_config("lm/160M")
    f, d = lm_flops(cfg), 1e9
    attention = 12 * cfg.layers * cfg.context_length * cfg.heads * cfg.head_dim * d
    assert f.train_flops(d) == pytest.approx(6 * f.params_matmul * d + attention, rel=1e-12)


# ----------------------------------------------------------------------------------------------- growth
WIDE_A = dataclasses.replace(A, name="wide-A", hidden=40, intermediate=56)
PAIRS = [(A, B), (B, C), (A, C), (A, WIDE_A), (A, dataclasses.replace(C, name="untied-C", tie_embeddings=False)),
         (dataclasses.replace(A, name="untied-A", tie_embeddings=False),
          dataclasses.replace(C, name="untied-C", tie_embeddings=False))]


@pytest.mark.parametrize("parent,child", PAIRS, ids=lambda c: c.name)
def test_preserve_is_exact(parent, child):
    ids = torch.randint(0, parent.vocab_size, (3, parent.context_length), generator=torch.Generator().manual_seed(0))
    p = trained_like(parent)
    c = grow_lm(p, parent, child, "preserve", seed=1)
    assert {k: tuple(v.shape) for k, v in c.items()} == lm_expected_shapes(child)
    want, got = logits(parent, p, ids), logits(child, c, ids)
    assert (want - got).abs().max() < 1e-5 * max(1.0, want.abs().max().item())


def test_stack_exact_without_depth_change_and_corner_is_not():
    ids = torch.randint(0, 64, (2, 16))
    p = trained_like(A)
    assert torch.allclose(logits(WIDE_A, grow_lm(p, A, WIDE_A, "stack"), ids), logits(A, p, ids), atol=1e-5)
    assert not torch.allclose(logits(C, grow_lm(p, A, C, "stack"), ids), logits(A, p, ids), atol=1e-3)
    assert not torch.allclose(logits(C, grow_lm(p, A, C, "corner"), ids), logits(A, p, ids), atol=1e-3)


def test_growth_is_deterministic_in_seed():
    p = trained_like(A)
    one, two, other = (grow_lm(p, A, C, "preserve", seed=s) for s in (3, 3, 4))
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert any(not torch.equal(one[k], other[k]) for k in one)


def test_every_new_parameter_gets_a_gradient_after_a_step():
    p = trained_like(A)
    model = create_lm(C, state_dict=grow_lm(p, A, C, "preserve"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        opt.zero_grad()
        lm_loss(model(input_ids=ids[:, :-1]).logits, ids[:, 1:]).backward()
        if _ == 0:
            opt.step()
    d, hd = A.hidden, A.head_dim
    q_new = [h for h in range(C.heads) if h not in head_map(A, C)[0]]
    layer = model.model.layers[1]  # an inserted identity layer (parent 0 → 0, parent 1 → 2)
    parts = {"embedding new columns": model.model.embed_tokens.weight.grad[:, d:],
             "q_proj new columns": model.model.layers[0].self_attn.q_proj.weight.grad[:, d:],
             "o_proj new rows": model.model.layers[0].self_attn.o_proj.weight.grad[d:],
             "new head q rows": model.model.layers[0].self_attn.q_proj.weight.grad[q_new[0] * hd:(q_new[0] + 1) * hd],
             "new MLP units": model.model.layers[0].mlp.up_proj.weight.grad[A.intermediate:],
             "down_proj new columns": model.model.layers[0].mlp.down_proj.weight.grad[:, A.intermediate:],
             "new gains": model.model.norm.weight.grad[d:],
             "identity layer q": layer.self_attn.q_proj.weight.grad}
    for what, g in parts.items():
        assert g.abs().min() > 0 or g.abs().sum(-1).min() > 0, what
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


NINE = dataclasses.replace(A, name="nine", hidden=72, heads=9, kv_heads=3)


@pytest.mark.parametrize("parent,child,match", [
    (A, dataclasses.replace(A, name="x", hidden=8, head_dim=8, heads=1, kv_heads=1), "shrinks"),
    (A, dataclasses.replace(C, name="x", vocab_size=65), "vocab_size"),
    (NINE, dataclasses.replace(NINE, name="x", hidden=80, heads=10, kv_heads=5), "KV heads 3 -> 5"),
])
def test_invalid_growth_is_refused(parent, child, match):
    with pytest.raises(UserError, match=match):
        grow_lm(trained_like(parent), parent, child, "preserve")


def test_untied_parent_cannot_grow_into_tied_child_and_bad_state_is_named():
    untied = dataclasses.replace(A, name="untied-A", tie_embeddings=False)
    with pytest.raises(UserError, match="untied"):
        grow_lm(trained_like(untied), untied, C, "preserve")
    state = trained_like(A)
    state["model.norm.weight"] = torch.ones(3)
    with pytest.raises(UserError, match="model.norm.weight has shape"):
        grow_lm(state, A, C, "preserve")


# ----------------------------------------------------------------------------------------------- losses, task
def test_losses_match_naive_references():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    y = torch.randint(0, 7, (2, 3), generator=g)
    naive_ce = -sum(s[b, i].log_softmax(-1)[y[b, i]] for b in range(2) for i in range(3)) / 6
    assert torch.allclose(lm_loss(s, y), naive_ce)
    tau = 2.0
    naive_kl = 0.0
    for b in range(2):
        for i in range(3):
            p, q = (t[b, i] / tau).softmax(-1), (s[b, i] / tau).softmax(-1)
            naive_kl += (p * (p / q).log()).sum()
    assert torch.allclose(token_kl_loss(s, t, tau), tau**2 * naive_kl / 6, atol=1e-6)
    assert token_kl_loss(t, t).abs() < 1e-6
    assert torch.allclose(hidden_mse_loss(s, t), ((s - t) ** 2).sum() / s.numel())


def test_distill_task_after_preserve_starts_at_zero_kl_and_keeps_teacher_frozen():
    p = trained_like(A)
    teacher = create_lm(A, state_dict=p)
    student = create_lm(C, state_dict=grow_lm(p, A, C, "preserve"))
    task = build_lm_task(student, distill="kl+hidden", weight=1.0, teacher=teacher, student_dim=C.hidden,
                         teacher_dim=A.hidden, temperature=2.0).train()
    ids = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(0))
    out = task(ids)
    assert out["kl"] < 1e-9 and out["hidden_mse"] > 0 and not teacher.training
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    opt = torch.optim.SGD([q for q in task.parameters() if q.requires_grad], lr=0.1)
    out["loss"].backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert task.proj.weight.grad is not None and set(task.extra_state()) == {"proj.weight"}
    assert torch.allclose(out["loss"], out["lm_loss"] + out["kl"] + out["hidden_mse"])
    assert set(build_lm_task(student)(ids)) == {"loss", "lm_loss"}


def test_export_loads_with_auto_model(tmp_path):
    from transformers import AutoModelForCausalLM

    p = trained_like(B)
    export_pretrained(B, p, tmp_path / "hf")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, logits(B, p, ids), atol=1e-6)
    assert F.mse_loss(loaded.lm_head.weight, loaded.model.embed_tokens.weight) == 0
