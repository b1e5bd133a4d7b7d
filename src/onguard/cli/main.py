"""Entry point of the `onguard` command: parses arguments, sets up logging, turns errors into exit codes."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

import onguard
from onguard import __version__
from onguard.cli import audit, demo, incidents, init, keystore, module, notify, policies, preflight, presign, \
    proposals, recover, replay, run, status
from onguard.cli.common import Exit, accept_shared_options_everywhere, add_global_config_argument, resolve_config
from onguard.errors import OnguardError
from onguard.log import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onguard", description=onguard.__doc__)
    parser.add_argument("--version", action="version", version=f"onguard {__version__}")
    parser.add_argument("--log-format", choices=("console", "json"), default="console",
                        help="console: readable lines (default); json: one JSON object per line")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    add_global_config_argument(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    init.register(commands)
    run.register(commands)
    demo.register(commands)
    incidents.register(commands)
    keystore.register(commands)
    policies.register(commands)
    status.register(commands)
    audit.register(commands)
    presign.register(commands)
    proposals.register(commands)
    module.register(commands)
    preflight.register(commands)
    replay.register(commands)
    notify.register(commands)
    recover.register(commands)
    accept_shared_options_everywhere(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_config(args)
    configure_logging(args.log_format, args.log_level)
    try:
        return int(args.handler(args) or 0)
    except OnguardError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return Exit.INTERRUPTED
    except Exception as exc:  # a bug of ours: say so plainly, keep the traceback for --debug
        if args.debug:
            traceback.print_exc()
        print(f"onguard: internal error: {type(exc).__name__}: {exc}\n"
              "  hint: run again with --debug for the traceback, and report it", file=sys.stderr)
        return Exit.INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
