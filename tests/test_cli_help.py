"""Every command and every flag of the command line says what it does in `--help`."""

import argparse

from convlens.cli import build_parser


def _undocumented(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if not helps.get(name):
                    out.append(" ".join(path + (name,)))
                out += _undocumented(sub, path + (name,))
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            out.append(" ".join(path) + " " + "/".join(action.option_strings or [action.dest]))
    return out


def test_every_command_and_flag_has_help():
    assert _undocumented(build_parser()) == []
