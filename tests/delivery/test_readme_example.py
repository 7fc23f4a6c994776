"""The README's `>>>` examples run as doctests in this environment (the quick lane; the install
test runs them again in a fresh, non-editable install)."""
from __future__ import annotations

import doctest
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_examples() -> str:
    blocks = re.findall(r"```(?:python|pycon)\n(.*?)```", README.read_text(), re.S)
    return "\n".join(b for b in blocks if ">>>" in b)


def test_the_readme_has_an_adapt_example():
    assert "model.adapt(" in readme_examples()


def test_the_readme_examples_give_the_printed_outputs():
    torch.set_num_threads(1)
    test = doctest.DocTestParser().get_doctest(readme_examples(), {}, "README.md", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0, result
