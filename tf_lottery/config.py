"""gin configuration: parsing with readable errors (naming the bad binding and the closest valid
one), and the canonical text of a requested config (what bin/train compares across reruns)."""
import difflib
import inspect
import logging as std_logging
import math
import numbers
import os
import re

import gin
from absl import logging

from tf_lottery.errors import ConfigError


def register_configurables():
    """Import every module that defines gin configurables, so bindings can be checked."""
    import tf_lottery.data  # noqa: F401
    import tf_lottery.experiment  # noqa: F401
    import tf_lottery.models  # noqa: F401
    import tf_lottery.pruning  # noqa: F401
    import tf_lottery.search  # noqa: F401
    import tf_lottery.training  # noqa: F401


def _configurables():
    """{name: parameter names} of every registered configurable."""
    from gin import config as gin_config

    found = {}
    for selector, configurable in gin_config._REGISTRY.items():  # no public listing API
        name = selector.split(".")[-1]
        try:
            params = set(inspect.signature(configurable.wrapper).parameters)
        except (TypeError, ValueError):
            params = set()
        wrapped = getattr(configurable, "wrapped", None)
        if wrapped is not None:
            target = wrapped.__init__ if inspect.isclass(wrapped) else wrapped
            try:
                params |= set(inspect.signature(target).parameters) - {"self"}
            except (TypeError, ValueError):
                pass
        found[name] = params
    return found


def explain_gin_error(error):
    """One line saying which binding is wrong and what the closest valid one is."""
    message = str(error).splitlines()[0]
    known = _configurables()
    missing = re.search(r"No configurable matching '([^']+)'", message)
    if missing:
        name = missing.group(1).split(".")[-1]
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown gin configurable {name!r}{hint}"
    param = re.search(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'",
                      message)
    if param:
        name, parameter = param.group(1).split(".")[-1], param.group(2)
        close = difflib.get_close_matches(parameter, sorted(known.get(name, ())), n=1)
        hint = f"; did you mean '{name}.{close[0]}'?" if close else ""
        return f"{name} has no parameter {parameter!r}{hint}"
    token = re.search(r"Failed to parse token '([^']*)'", str(error))
    if token:
        line = (getattr(error, "text", None) or "").strip()
        where = f" in {line!r}" if line else ""
        return (f"cannot read the value {token.group(1)!r}{where}: a gin value is a Python "
                f"literal (a number, a 'quoted string', True/False/None, a [list]) or a "
                f"@reference")
    return f"invalid gin config: {message}"


def parse_config(files=(), bindings=()):
    """Parse gin files and bindings; any mistake becomes one ConfigError line."""
    register_configurables()
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                f.read()
        except OSError as e:
            raise ConfigError(f"cannot read gin file {path}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"cannot read gin file {path}: not UTF-8 text (byte {e.start})"
                              ) from None
    gin.clear_config()
    for path in files:  # `include 'base/x.gin'` resolves next to the including file
        gin.add_config_file_search_path(os.path.dirname(os.path.abspath(path)))
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.FATAL)  # gin logs every include path it tries first
    std_logging.disable(std_logging.ERROR)
    try:
        gin.parse_config_files_and_bindings(list(files), list(bindings))
    except Exception as e:  # gin raises ValueError, KeyError, SyntaxError, ...
        raise ConfigError(explain_gin_error(e)) from None
    finally:
        logging.set_verbosity(verbosity)
        std_logging.disable(std_logging.NOTSET)
    check_bound_values()


def _defaults(configurable):
    """{parameter: default} of a registered configurable's own signature."""
    wrapped = getattr(configurable, "wrapped", None)
    target = wrapped.__init__ if inspect.isclass(wrapped) else wrapped
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


# Parameters named as numbers (DESIGN.md: names that cannot be misread) whose default is None
_NUMERIC_NAME = re.compile(r"(fraction|sparsity|density|remaining|learning_rate|momentum|"
                           r"\.num_\w+|epochs|steps|rounds)$")


def check_value(name, value, default):
    """Raise ConfigError when `value` cannot stand where `default` stands: a number (not NaN
    or ±inf) for a numeric default, True/False for a boolean one; a list of them where a list
    is given (per-round values). None and dicts are let through (the constructor decides), and
    so is anything for other defaults."""
    if value is None or isinstance(value, dict) or _is_reference(value):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            check_value(name, item, default)
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
    elif default is None and _NUMERIC_NAME.search(name) and isinstance(value, (str, bool)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    elif isinstance(default, numbers.Real):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{name} must be a number (default {default!r}), got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number (default {default!r}), got "
                              f"{value!r}")
        if isinstance(default, numbers.Integral) and value != int(value):
            raise ConfigError(f"{name} must be a whole number (default {default!r}), got "
                              f"{value!r}")


def check_bound_values():
    """Check every bound literal against its parameter's default (check_value), so that a value
    of the wrong type, NaN or ±inf is one ConfigError naming the binding before anything is
    built or written. References (@name) and macros are left to gin."""
    from gin import config as gin_config

    for (_, selector), bindings in gin_config._CONFIG.items():  # no public listing API
        configurable = gin_config._REGISTRY.get(selector)
        if configurable is None:
            continue
        defaults = _defaults(configurable)
        short = selector.split(".")[-1]
        for parameter, value in bindings.items():
            if parameter in defaults and not _is_reference(value):
                check_value(f"{short}.{parameter}", value, defaults[parameter])


def _is_reference(value):
    return type(value).__module__.startswith("gin")  # ConfigurableReference, macros


def explain_construction_error(error):
    """One line for an error raised while gin builds the configured objects: a missing required
    binding, or a constructor refusing a value (gin appends "In call to configurable 'X'")."""
    text = str(error)
    required = re.search(r"Required bindings for `([^`]+)` not provided in config: \[(.*)\]",
                         text)
    if required:
        name = required.group(1).split(".")[-1]
        params = [p.strip(" '\"") for p in required.group(2).split(",") if p.strip()]
        return (f"missing required gin bindings: {', '.join(f'{name}.{p}' for p in params)}; "
                f"give a recipe that binds them, e.g. --gin_file=gin_configs/soft_iep.gin "
                f"(see gin_configs/)")
    where = re.search(r"In call to configurable '([^']+)'", text)
    first = (text.strip().splitlines() or [type(error).__name__])[0]
    prefix = f"{where.group(1).split('.')[-1]}: " if where else ""
    return f"invalid gin config: {prefix}{first} ({type(error).__name__})"


def requested_config():
    """The canonical text of the parsed config: the same for the same bindings, whatever the
    order of files and flags they came from."""
    return gin.config_str()
