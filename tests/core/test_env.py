"""rates_core.env: typed reads that name the variable when its value is wrong."""

import pytest

from rates_core.env import ConfigError, env_float, env_int


@pytest.mark.parametrize("raw, expected", [("", 5.0), ("2.5", 2.5), ("0", 0.0)])
def test_env_float_reads_numbers_and_defaults_when_empty(raw, expected):
    assert env_float("DRAIN", 5.0, minimum=0, environ={"DRAIN": raw}) == expected


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "-1", "five"])
def test_env_float_refuses_what_is_not_a_finite_number_in_range(raw):
    with pytest.raises(ConfigError, match="DRAIN"):
        env_float("DRAIN", 5.0, minimum=0, environ={"DRAIN": raw})


def test_env_int_names_the_variable():
    with pytest.raises(ConfigError, match="THREADS must be >= 1"):
        env_int("THREADS", 4, minimum=1, environ={"THREADS": "0"})
    with pytest.raises(ConfigError, match="THREADS must be <= 64, got 65"):
        env_int("THREADS", 4, minimum=1, maximum=64, environ={"THREADS": "65"})
    assert env_int("THREADS", 4, minimum=1, maximum=64, environ={"THREADS": "64"}) == 64
