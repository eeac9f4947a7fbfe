"""`compt models [--family NAME] [--json]`: the registry with parameters and GFLOPs.

Without ``--family`` it lists compt's own families (CLIP and language models), which needs no torch and answers
at once; upstream open_clip's ViT configs (``--family open_clip``) need open_clip imported, which takes seconds.
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered models and families")
    p.add_argument("--family", help="one family (paper, paper-swin, tiny, test, test-swin, lm-cpu, lm-pythia, "
                                    "lm-test), or open_clip: upstream open_clip's ViT configs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def model_row(name: str) -> dict:
    from compt.flops import model_flops
    from compt.models import get_model_config

    cfg = get_model_config(name)
    f = model_flops(cfg)
    v, t = cfg.vision, cfg.text
    vision = f"swin C{v.swin.embed_dim} {'-'.join(map(str, v.swin.depths))}" if v.swin else f"{v.width}×{v.layers}"
    return {"model": name, "family": cfg.family, "vision": vision, "text": f"{t.width}/{t.heads}×{t.layers}",
            "embed_dim": cfg.embed_dim, "image_size": v.image_size, "params_image_m": f.params_image / 1e6,
            "params_text_m": f.params_text / 1e6, "image_gflops": f.image / 1e9, "text_gflops": f.text / 1e9,
            "gflops": f.total / 1e9}


def lm_row(name: str) -> dict:
    from compt.lm.flops import lm_flops
    from compt.lm.models import get_lm_config

    c = get_lm_config(name)
    f = lm_flops(c)
    return {"model": name, "family": c.family, "hidden": c.hidden, "layers": c.layers, "heads": c.heads,
            "kv_heads": c.kv_heads, "head_dim": c.head_dim, "intermediate": c.intermediate, "vocab": c.vocab_size,
            "context": c.context_length, "params_m": f.params / 1e6, "gflops": f.forward / 1e9}


def print_lm_rows(rows: list[dict]) -> None:
    head = f"{'model':<14} {'family':<10} {'d×L':>9} {'heads/kv':>8} {'MLP':>5} {'vocab':>6} {'ctx':>5} " \
           f"{'params (M)':>10} {'GFLOPs/seq':>10}"
    print_table(head, [f"{r['model']:<14} {r['family']:<10} {r['hidden']:>5}×{r['layers']:<3} "
                       f"{r['heads']:>5}/{r['kv_heads']:<2} {r['intermediate']:>5} {r['vocab']:>6} "
                       f"{r['context']:>5} {r['params_m']:>10.2f} {r['gflops']:>10.4g}" for r in rows])


def print_table(head: str, lines: list[str]) -> None:
    """A fixed-width table: the header, a rule as wide as it, then one line per row."""
    print(head)
    print("-" * len(head))
    for line in lines:
        print(line)


def run(args: argparse.Namespace) -> int:
    from compt.lm.models import list_lm_models, lm_families
    from compt.models import list_families, list_models

    lm_fams = lm_families()
    lm_names = list_lm_models(args.family) if args.family in (None, *lm_fams) else []
    names = list_models(args.family, upstream=False) if args.family not in lm_fams else []
    rows, lm_rows = [model_row(n) for n in names], [lm_row(n) for n in lm_names]
    if args.json:
        fams = {k: list(v) for k, v in (list_families() | lm_fams).items()}
        print(json.dumps({"families": fams, "models": rows, "language_models": lm_rows}, indent=2))
        return 0
    if lm_rows:
        print_lm_rows(lm_rows)
        if not rows:
            return 0
        print()
    head = f"{'model':<22} {'family':<10} {'vision':<16} {'text':<11} {'embed':>5} {'img':>4} " \
           f"{'params img/txt (M)':>19} {'GFLOPs img/txt':>17}"
    print_table(head, [f"{r['model']:<22} {r['family']:<10} {r['vision']:<16} {r['text']:<11} {r['embed_dim']:>5} "
                       f"{r['image_size']:>4} {r['params_image_m']:>9.2f}/{r['params_text_m']:<9.2f} "
                       f"{r['image_gflops']:>8.3g}/{r['text_gflops']:<8.3g}" for r in rows])
    print("\nfamilies (ascending compute): " + "; ".join(f"{k}: {' < '.join(v)}" for k, v in list_families().items()
                                                          if args.family in (None, k)))
    if args.family is None:
        print("upstream open_clip ViT configs: compt models --family open_clip")
    return 0
