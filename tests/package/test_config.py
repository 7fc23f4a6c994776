import pytest

from metalstm.config import CONFIGS, Config, get_config


def test_the_named_configurations_exist():
    assert {"smoke", "glyphs-1shot", "glyphs-5shot", "paper-1shot", "paper-5shot"} <= set(CONFIGS)


def test_paper_configurations_follow_spec_5_and_7():
    one, five = get_config("paper-1shot"), get_config("paper-5shot")
    assert (one.steps, one.batch_size, one.episodes, one.bn_momentum) == (12, 5, 75_000, 0.9)
    assert (five.steps, five.batch_size, five.episodes, five.bn_momentum) == (8, 25, 50_000, 0.95)
    for c in (one, five):
        assert (c.dataset, c.image_size, c.in_channels, c.n_way, c.n_query) == ("mini-imagenet", 84, 3, 5, 15)
        assert (c.lr, c.clip, c.hidden, c.p, c.bn_eps) == (1e-3, 0.25, 20, 10.0, 1e-3)
        assert (c.val_every, c.val_episodes, c.test_episodes) == (1_000, 100, 600)
        assert c.forget_bias == (4.0, 5.0) and c.input_bias == (-5.0, -4.0)


def test_the_whole_support_set_is_one_batch_in_the_glyph_settings():
    for name in ("glyphs-1shot", "glyphs-5shot"):
        c = get_config(name)
        assert c.batch_size == c.n_way * c.k_shot


def test_unknown_name_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown configuration 'paper-3shot'.*glyphs-5shot"):
        get_config("paper-3shot")


def test_overrides_and_unknown_fields():
    assert get_config("paper-5shot", steps=5).steps == 5
    with pytest.raises(ValueError, match="unknown configuration fields: stepz"):
        get_config("smoke", stepz=3)


def test_round_trip_through_json_form():
    for c in CONFIGS.values():
        assert Config.from_dict(c.to_dict()) == c
