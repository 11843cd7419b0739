"""The commands' --help: every flag with a default shows it, once."""
import re

import pytest

from ugcn_fast import evaluate, lift, train


@pytest.mark.parametrize("command", [train, evaluate, lift], ids=["train", "evaluate", "lift"])
def test_help_shows_each_default_once(command):
    parser = command.build_parser()
    text = " ".join(parser.format_help().split())  # unwrapped
    assert "(default: None)" not in text
    for action in parser._actions:
        if action.help is None or not action.option_strings:
            continue
        rendered = action.help % {"default": action.default} if "%(default)" in action.help else action.help
        assert len(re.findall(r"\(default", rendered)) <= 1, (action.option_strings, rendered)


def test_train_help_names_the_paper_recipe():
    text = " ".join(train.build_parser().format_help().split())
    for flag, default in (("--epochs EPOCHS", "110"), ("--lr LR", "0.01"), ("--seed SEED", "0"),
                          ("--lambda-motion LAMBDA_MOTION", "1.0"), ("--kernel-size KERNEL_SIZE", "5")):
        assert f"{flag} (default: {default})" in text, flag
