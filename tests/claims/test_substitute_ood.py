"""The substitution and out-of-domain tools: their intervention wrapper, their tables, their command lines."""
import json

import pytest
import torch

from metalstm.config import get_config
from metalstm.episodes import sampler_for
from metalstm.learner import Learner
from metalstm.metalearner import SGDCell, inner_loop
from metalstm.tools import ood, substitute


@pytest.fixture(scope="module")
def episode():
    return sampler_for(get_config("smoke"), "train")[3]


def run(learner, rule, episode, steps=3):
    return inner_loop(learner, rule, episode.support_x, episode.support_y, steps, 5,
                      generator=torch.Generator().manual_seed(5), record=True)[0]


def test_fed_gradient_scales_and_clips_what_the_rule_is_fed(episode):
    learner = Learner(n_way=5)
    t0 = learner.init_params(torch.Generator().manual_seed(0))
    plain = run(learner, SGDCell(t0, 0.1), episode)
    torch.testing.assert_close(run(learner, ood.FedGradient(SGDCell(t0, 0.1)), episode), plain, rtol=0, atol=0)
    torch.testing.assert_close(run(learner, ood.FedGradient(SGDCell(t0, 0.2), scale=0.5), episode), plain,
                               rtol=0, atol=1e-6)
    tiny = torch.full((3,), 1e-3)                      # every step of length 0.1 * 1e-3 at most
    theta, _, gates = inner_loop(learner, ood.FedGradient(SGDCell(t0, 0.1), limits=tiny), episode.support_x,
                                 episode.support_y, 1, 5, generator=torch.Generator().manual_seed(5), record=True)
    assert (theta - t0).norm() == pytest.approx(1e-4, rel=1e-4)


def fake_substitution(k, shift):
    accs = [0.8, 0.9, 1.0, 0.7]
    rules = {name: {"sentence": "s", "numbers": 2} for name in substitute.CANDIDATES}
    test_sets = {t: {"seed": 2, "accuracies": {"lstm": accs, **{n: [a - shift for a in accs] for n in substitute.CANDIDATES},
                                               "first 3 steps": accs}} for t in ("glyphs", "digits")}
    steps = {"conv1": {"median_abs": 0.03, "negative": 0.5, "median": 0.0, "q10": -0.05, "q90": 0.05}}
    return {"config": {"k_shot": k}, "rules": rules, "test_sets": test_sets,
            "meta_sgd": {"steps": steps, "glyphs": {"meta-sgd": accs, "conv 1 frozen": accs, "no ascent": accs}}}


def test_substitution_tables_from_known_numbers(tmp_path):
    paths = []
    for k, shift in ((1, 0.1), (5, 0.0)):
        paths.append(tmp_path / f"s{k}.json")
        paths[-1].write_text(json.dumps(fake_substitution(k, shift)))
    text = substitute.table(paths)
    assert "| glyphs 1-shot | glyphs 5-shot | digits 1-shot | digits 5-shot |" in text
    row = next(line for line in text.splitlines() if line.startswith("| `median`"))
    assert row.count("-10.00 +- 0.00") == 2 and row.count("+0.00 +- 0.00 (n.s.)") == 2
    assert "85.00 +- " in text                                   # the LSTM's own mean, 85%
    assert "| 1-shot | 0.030 | 50% | -0.050 to +0.050 | +0.00 +- 0.00 (n.s.) |" in substitute.meta_sgd_table(paths)
    assert substitute.main(["--table", str(paths[0]), str(paths[1])]) == 0
    assert substitute.main(["--table", str(tmp_path / "missing.json")]) == 2


def test_the_commands_refuse_a_missing_shot(capsys):
    for main in (substitute.main, ood.main):
        with pytest.raises(SystemExit) as stop:
            main([])
        assert stop.value.code == 2
        assert "--shot" in capsys.readouterr().err


def test_ood_table_from_known_numbers():
    per_step = {"grad_norm": [1.0, 0.5], "grad_norm_q90": [2.0, 1.5], "support_loss": [1, 0], "step_length": [1, 1],
                "query_acc": [0.2, 0.5, 0.9]}
    good, bad = [0.9] * 4, [0.2, 0.2, 0.9, 0.9]
    report = {"k_shot": 5, "rules": {"schedule": {
        "name": "Learned schedule", "per_step": {"glyphs": per_step, "digits": {**per_step, "grad_norm_q90": [9.0, 7.0]}},
        "accuracies": {"glyphs": {"as trained": good, "clip": good, "half": good},
                       "digits": {"as trained": bad, "clip": good, "half": good}}}}}
    text = ood.table([report])
    assert "| Learned schedule | 5-shot | 90.00 +- 0.00 | 55.00 +- " in text
    assert "| 50.0% | 1.50 / 7.00 | +35.00 +- " in text

