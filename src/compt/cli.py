"""`compt` command line: one sub-command per module in `compt.commands`.

Building the parser imports no torch (each command imports what it needs when it runs), so ``compt --help``
answers at once.

User errors (`UserError`) and environment failures (`OSError`: disk full, read-only filesystem, missing
permissions) print one line to stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from compt.errors import Stopped, UserError, one_line, os_error_message
from compt.threads import passive_wait_policy

passive_wait_policy()  # before any command imports torch (see compt.threads)

COMMANDS = ("models", "flops", "plan", "grow", "prune", "train", "eval", "finetune", "export", "report", "demo")
OUTPUT_OPTIONS = ("run_dir", "out")   # options that choose where a command writes (named in disk errors)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compt", description="Chain-of-Models Pre-Training for CLIP/SigLIP and "
                                                               "language-model (Llama) families (README.md, docs/).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"compt.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"compt {args.command}: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        flags = [f"--{name.replace('_', '-')}" for name in OUTPUT_OPTIONS if name in vars(args)]
        print(f"compt {args.command}: error: {os_error_message(e, flags)}", file=sys.stderr)
        return 2
    except Stopped as e:   # a stop signal outside a training loop (compt.signals)
        print(f"compt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"compt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
