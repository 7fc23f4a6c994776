"""The shipped checkpoints still give the shipped results: data/checkpoints/glyphs-1shot.pt and
glyphs-5shot.pt (the Meta-Learner LSTM), evaluated as `python -m metalstm.evaluate` evaluates
them, on the default path, score on each of the first 10 meta-test episodes exactly the accuracy
that data/results/ladder-{1,5}shot.json stores for it (those files hold every episode's accuracy
of the 600-episode runs; the episodes do not depend on how many are run)."""
import json
from pathlib import Path

import pytest

from metalstm import evaluate
from metalstm.config import Config

ROOT = Path(__file__).resolve().parents[2]
EPISODES = 10


def stored_accuracies(results: Path, checkpoint: str, test_set: str = "glyphs") -> tuple[list[float], dict]:
    """The per-episode accuracies of `checkpoint`'s row in an evaluate --json file, and its config."""
    report = json.loads(results.read_text())
    block = report["test_sets"][test_set]
    [row] = [r for r in block["results"] if r.get("note", "").split(" ")[0] == checkpoint]
    return row["accuracies"], report["config"]


@pytest.mark.slow
@pytest.mark.parametrize("shot", [1, 5])
def test_shipped_checkpoints_give_the_shipped_per_episode_accuracies(shot, tmp_path, capsys):
    checkpoint = f"data/checkpoints/glyphs-{shot}shot.pt"
    want, config = stored_accuracies(ROOT / "data" / "results" / f"ladder-{shot}shot.json", checkpoint)
    assert len(want) == 600 and Config.from_dict(config).path == "fused"     # stored before --path: fast
    out = tmp_path / "eval.json"
    assert evaluate.main(["--checkpoint", str(ROOT / checkpoint), "--episodes", str(EPISODES), "--threads", "1",
                          "--test-sets", "glyphs", "--json", str(out)]) == 0
    [row] = json.loads(out.read_text())["test_sets"]["glyphs"]["results"]
    assert row["name"] == "Meta-Learner LSTM"
    assert row["accuracies"] == want[:EPISODES]
