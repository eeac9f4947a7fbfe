"""`compt flops MODEL [--json]`: analytic per-sample forward FLOPs (batch 1, 1 caption) and parameters."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flops", help="forward GFLOPs per sample (image + text; LMs: a sequence) and parameters")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compt.lm.models import is_lm

    out = lm_flops_row(args.model) if is_lm(args.model) else clip_flops_row(args.model)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:<15} {v:.4g}" if isinstance(v, float) else f"{k:<15} {v}")
    return 0


def lm_flops_row(name: str) -> dict:
    """A language model: forward GFLOPs of one sequence, training FLOPs per token (6·N + attention)."""
    from compt.lm.flops import lm_flops
    from compt.lm.models import get_lm_config

    cfg = get_lm_config(name)
    f = lm_flops(cfg)
    return {"model": cfg.name, "gflops": f.forward / 1e9, "train_flops_per_token": f.train_flops(1),
            "params_m": f.params / 1e6, "params_matmul_m": f.params_matmul / 1e6,
            "context_length": cfg.context_length, "vocab_size": cfg.vocab_size}


def clip_flops_row(name: str) -> dict:
    from compt.flops import model_flops
    from compt.models import get_model_config

    cfg = get_model_config(name)
    f = model_flops(cfg)
    return {"model": cfg.name, "image_gflops": f.image / 1e9, "text_gflops": f.text / 1e9, "gflops": f.total / 1e9,
           "params_m": f.params / 1e6, "params_image_m": f.params_image / 1e6, "params_text_m": f.params_text / 1e6,
           "image_size": cfg.vision.image_size, "context_length": cfg.text.context_length}
