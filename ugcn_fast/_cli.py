"""--help for the package's commands: every flag with a default shows it once."""
from __future__ import annotations

import argparse


def show_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Appends "(default: ...)" to the help of every flag that has a default, a flag without help text too
    (argparse's ArgumentDefaultsHelpFormatter skips those, and doubles a default the help already names)."""
    for action in parser._actions:
        if not action.option_strings or action.default is None or action.default == argparse.SUPPRESS:
            continue
        switches = (argparse._HelpAction, argparse._StoreTrueAction, argparse._StoreFalseAction)
        if isinstance(action, switches) or "default" in (action.help or ""):  # a switch says what it does
            continue
        action.help = (action.help + " " if action.help else "") + "(default: %(default)s)"
    return parser
