"""The shipped checkpoints and baselines still give the shipped results: data/checkpoints/glyphs-1shot.pt and
glyphs-5shot.pt (the Meta-Learner LSTM), evaluated as `python -m metalstm.evaluate` evaluates
them, on the default path, score on each of the first 10 meta-test episodes exactly the accuracy
that data/results/ladder-{1,5}shot.json stores for it (those files hold every episode's accuracy
of the 600-episode runs; the episodes do not depend on how many are run)."""
import json
import shutil
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


@pytest.mark.slow
@pytest.mark.parametrize("shot", [1, 5])
def test_shipped_baselines_give_the_shipped_per_episode_accuracies(shot, tmp_path):
    """Nearest neighbour and Matching Networks from the shipped networks (a copy of
    data/checkpoints/baselines, so nothing is written into the repository): the stored accuracies
    of the first 10 episodes, and nothing trained again."""
    cache = tmp_path / "baselines"
    shutil.copytree(ROOT / "data" / "checkpoints" / "baselines", cache)
    before = sorted(p.name for p in cache.iterdir())
    report = json.loads((ROOT / "data" / "results" / f"ladder-{shot}shot.json").read_text())
    want = {r["name"]: r["accuracies"] for r in report["test_sets"]["glyphs"]["results"]}
    out = tmp_path / "eval.json"
    assert evaluate.main(["--checkpoint", str(ROOT / f"data/checkpoints/glyphs-{shot}shot.pt"),
                          "--episodes", str(EPISODES), "--threads", "1", "--test-sets", "glyphs",
                          "--baselines", "nearest", "matching", "--cache", str(cache), "--json", str(out)]) == 0
    got = {r["name"]: r["accuracies"] for r in json.loads(out.read_text())["test_sets"]["glyphs"]["results"]}
    for name in ("Nearest neighbour", "Matching Networks"):
        assert got[name] == want[name][:EPISODES], name
    assert sorted(p.name for p in cache.iterdir()) == before
