"""python -m metalstm.evaluate: the ladder's paired table, in-domain and out-of-domain (digits)."""
import json

import pytest
import torch

from metalstm.config import get_config
from metalstm.evaluate import main, meta_test_sampler
from metalstm.train import train


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    """Smoke runs of three rungs (sgd trains nothing; init and the LSTM a few episodes)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ladder")
    paths = {}
    for rung in ("sgd", "init", "lstm"):
        train(get_config("smoke", rule=rung), root / rung, progress=False)
        paths[rung] = root / rung / "best.pt"
    return paths


@pytest.mark.slow
def test_the_table_has_every_rung_with_paired_differences_on_both_domains(ladder, tmp_path, capsys):
    out = tmp_path / "ladder.json"
    code = main(["--checkpoint", str(ladder["lstm"]), "--rungs", str(ladder["sgd"]), str(ladder["init"]),
                 "--episodes", "6", "--test-sets", "glyphs", "digits", "--threads", "1", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "episodes of glyphs" in text and "episodes of digits" in text
    assert "(vs SGD (random init))" in text and "(vs Learned init (FO-MAML))" in text
    report = json.loads(out.read_text())
    for test_set in ("glyphs", "digits"):
        rows = report["test_sets"][test_set]["results"]
        assert [r["rung"] for r in rows] == ["sgd", "init", "lstm"]          # in ladder order
        assert all(len(r["accuracies"]) == 6 for r in rows)
        init = rows[1]
        diffs = [a - b for a, b in zip(init["accuracies"], rows[2]["accuracies"])]
        assert init["vs_reference"][0] == pytest.approx(sum(diffs) / 6)


def test_digits_episodes_have_the_configurations_shape():
    cfg = get_config("glyphs-5shot")
    ep = meta_test_sampler(cfg, "digits")[0]
    assert ep.support_x.shape == (25, 1, 28, 28) and ep.query_x.shape == (75, 1, 28, 28)
    assert meta_test_sampler(cfg, "digits").seed == meta_test_sampler(cfg).seed


@pytest.mark.slow
def test_a_rung_of_another_setting_is_refused(ladder, tmp_path, capsys):
    other = tmp_path / "other"
    train(get_config("smoke", rule="init", k_shot=2, batch_size=10), other, progress=False)
    code = main(["--checkpoint", str(ladder["lstm"]), "--rungs", str(other / "best.pt"), "--episodes", "2"])
    assert code == 2
    assert "compare rules of one setting" in capsys.readouterr().err


@pytest.mark.slow
def test_reuse_gives_the_same_table_without_recomputing(ladder, tmp_path, capsys):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    common = ["--checkpoint", str(ladder["lstm"]), "--episodes", "4", "--test-sets", "glyphs", "--threads", "1"]
    assert main([*common, "--json", str(first)]) == 0
    assert main([*common, "--rungs", str(ladder["init"]), "--json", str(second), "--reuse", str(first)]) == 0
    old, new = (json.loads(p.read_text())["test_sets"]["glyphs"]["results"] for p in (first, second))
    lstm_old = next(r for r in old if r["rung"] == "lstm")
    lstm_new = next(r for r in new if r["rung"] == "lstm")
    assert lstm_new["accuracies"] == lstm_old["accuracies"] and lstm_new["seconds"] == lstm_old["seconds"]
    assert [r["rung"] for r in new] == ["init", "lstm"]
    assert main([*common[:3], "3", *common[4:], "--reuse", str(first)]) == 2   # another episode count
    assert "cannot stand in" in capsys.readouterr().err


def test_digits_refuse_more_images_per_class_than_the_smallest_class_holds():
    cfg = get_config("glyphs-5shot")
    meta_test_sampler(cfg.replace(n_query=169), "digits")                  # 5 + 169 = 174: every class serves
    with pytest.raises(ValueError, match="smallest class has 174"):
        meta_test_sampler(cfg.replace(n_query=170), "digits")              # 175: some classes could not
    with pytest.raises(ValueError, match="only 10 classes"):
        meta_test_sampler(cfg.replace(n_way=11), "digits")


def test_train_returns_each_validations_per_episode_accuracies(tmp_path):
    """TrainResult.val_accuracies holds the accuracies each validation averaged into log.csv."""
    from metalstm.config import get_config
    from metalstm.stats import mean_ci95
    cfg = get_config("smoke")
    result = train(cfg, tmp_path / "run", progress=False)
    assert sorted(result.val_accuracies) == [row["episode"] for row in result.history]
    for row in result.history:
        accs = result.val_accuracies[row["episode"]]
        assert len(accs) == cfg.val_episodes
        assert abs(mean_ci95(accs)[0] - row["val_acc"]) < 1e-12
