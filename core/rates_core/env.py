"""Typed reads of environment variables with errors that name the variable."""

import math
import os
from typing import Mapping


class ConfigError(ValueError):
    pass


def env_str(name: str, default: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    value = environ.get(name, "")
    if value == "":
        if default is None:
            raise ConfigError(f"environment variable {name} is required")
        return default
    return value


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    raw = env_str(name, str(default).lower(), environ)
    try:
        return _BOOLS[raw.strip().lower()]
    except KeyError:
        raise ConfigError(f"environment variable {name} must be true or false, got {raw!r}") from None


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None,
            environ: Mapping[str, str] | None = None) -> int:
    raw = env_str(name, str(default), environ)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"environment variable {name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"environment variable {name} must be <= {maximum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None,
              environ: Mapping[str, str] | None = None) -> float:
    raw = env_str(name, str(default), environ)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"environment variable {name} must be a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"environment variable {name} must be >= {minimum}, got {value}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...],
               environ: Mapping[str, str] | None = None) -> str:
    """One of ``choices`` (upper case), whatever the case it is written in."""
    raw = env_str(name, default, environ)
    value = raw.upper()
    if value not in choices:
        raise ConfigError(f"environment variable {name} must be one of {', '.join(choices)}, got {raw!r}")
    return value
