"""Errors that end a run with one readable message (bin/train prints them without a traceback)."""


class TfLotteryError(Exception):
    """Base class of every error tf_lottery reports to a user as one line."""


class ConfigError(TfLotteryError, ValueError):
    """An invalid setting: a gin binding, a name, a fraction outside its range."""


class DataError(TfLotteryError):
    """Data that cannot be found or read; the message says what to install or download."""


class TrainingError(TfLotteryError):
    """Training that cannot go on (e.g. a NaN loss); earlier completed work is kept."""


def check_fraction(name, value, allow_one=False):
    """Raise ConfigError unless 0 <= value < 1 (or <= 1 with allow_one)."""
    try:
        ok = not isinstance(value, bool) and 0 <= value and (
            value <= 1 if allow_one else value < 1)
    except TypeError:
        ok = False
    if not ok:
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ConfigError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def check_positive(name, value):
    """Raise ConfigError unless value is a finite number > 0 (not NaN, not inf, not a string)."""
    import math

    try:
        ok = not isinstance(value, bool) and 0 < value and math.isfinite(value)
    except TypeError:
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_choice(name, value, choices):
    """Return `value` if it is one of `choices`, else a ConfigError "<name> must be one of
    <choices>, got <value>" (the one form of that message in the package)."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value against a set or dict
        ok = False
    if not ok:
        shown = sorted(choices) if isinstance(choices, (set, frozenset, dict)) else list(choices)
        raise ConfigError(f"{name} must be one of {shown}, got {value!r}")
    return value


def check_subset(name, values, choices):
    """Return `values` (a string counts as a one-element list) as a tuple if every element is
    one of `choices`, else a ConfigError naming the unknown ones."""
    values = (values,) if isinstance(values, str) else tuple(values)
    unknown = sorted({str(v) for v in values} - {str(c) for c in choices})
    if unknown:
        raise ConfigError(f"{name} takes a subset of {tuple(choices)}, got {unknown}")
    return values
