"""`compt flops MODEL [--json]`: analytic per-sample forward FLOPs (batch 1, 1 caption) and parameters."""

from __future__ import annotations

import argparse
import json

from compt.flops import model_flops
from compt.models import get_model_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flops", help="forward GFLOPs per sample (image, text, total) and parameters of a model")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = get_model_config(args.model)
    f = model_flops(cfg)
    out = {"model": cfg.name, "image_gflops": f.image / 1e9, "text_gflops": f.text / 1e9, "gflops": f.total / 1e9,
           "params_m": f.params / 1e6, "params_image_m": f.params_image / 1e6, "params_text_m": f.params_text / 1e6,
           "image_size": cfg.vision.image_size, "context_length": cfg.text.context_length}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:<15} {v:.4g}" if isinstance(v, float) else f"{k:<15} {v}")
    return 0
