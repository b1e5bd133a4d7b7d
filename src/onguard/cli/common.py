"""What every command shares: where the config comes from (`--config FILE` before or after the command or its
action, else $ONGUARD_CONFIG, else ./onguard.toml) and what the exit codes mean."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from enum import IntEnum

CONFIG_ENV = "ONGUARD_CONFIG"
DEFAULT_CONFIG = "onguard.toml"
CONFIG_HELP = f"path to onguard.toml (default: ${CONFIG_ENV}, else ./{DEFAULT_CONFIG})"
# Options a command declares once and accepts after any of its actions too (`audit verify --db X`).
_SHARED_OPTIONS = ("config", "db")


class Exit(IntEnum):
    """The exit codes of every command, for scripts (documented in the README's "Exit codes")."""

    OK = 0
    NEEDS_A_HUMAN = 1   # a check failed, or the command could not finish what it was asked: read the message
    BAD_INPUT = 2       # a config, policy, key, file or argument to fix (argparse usage errors are 2 as well)
    INTERNAL_ERROR = 3  # a bug in onguard: run again with --debug and report it
    INTERRUPTED = 130


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` on a command that reads the config. No default here: one given before the command (or
    the environment) must not be overwritten by a command's default; `resolve_config` fills it in."""
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP)


def add_global_config_argument(parser: argparse.ArgumentParser) -> None:
    """`onguard --config FILE COMMAND …`: the same option before the command."""
    parser.add_argument("--config", metavar="FILE", default=None, help=CONFIG_HELP)


def accept_shared_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """Lets `--config` (and `--db`) be written after a command's action as well as before it: each action parser
    of a command that declares one gets the same option, with no default of its own."""
    for command in _children(parser):
        shared = [action for action in command._actions if action.dest in _SHARED_OPTIONS]
        for action in shared:
            if action.dest == "config":  # also for a command declaring it its own way: one default, one help
                action.default, action.metavar, action.help = argparse.SUPPRESS, "FILE", CONFIG_HELP
        for descendant in _descendants(command):
            present = {action.dest for action in descendant._actions}
            for action in shared:
                if action.dest not in present:
                    descendant.add_argument(*action.option_strings, metavar=action.metavar, help=action.help,
                                            default=argparse.SUPPRESS)


def resolve_config(args: argparse.Namespace) -> None:
    """`args.config` from the command line, else $ONGUARD_CONFIG, else ./onguard.toml."""
    if getattr(args, "config", None) is None:
        args.config = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def _children(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.values()


def _descendants(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for child in _children(parser):
        yield child
        yield from _descendants(child)
