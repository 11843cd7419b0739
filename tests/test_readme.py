"""The README's examples run as written."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.skipif(not README.exists(), reason="README.md not beside the tests")
def test_readme_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "README lost its python examples"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["per_sample"].shape == (256,)
    assert namespace["pred"].grad is not None
    exec(compile(blocks[1], "README.md", "exec"), namespace)
    assert namespace["y"].shape == (8, 128, 48, 17)
