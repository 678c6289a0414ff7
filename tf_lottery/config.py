"""gin configuration: parsing with readable errors (naming the bad binding and the closest valid
one), and the canonical text of a requested config (what bin/train compares across reruns)."""
import difflib
import inspect
import logging as std_logging
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
    return f"invalid gin config: {message}"


def parse_config(files=(), bindings=()):
    """Parse gin files and bindings; any mistake becomes one ConfigError line."""
    register_configurables()
    for path in files:
        try:
            open(path).close()
        except OSError as e:
            raise ConfigError(f"cannot read gin file {path}: {e.strerror}") from None
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


def requested_config():
    """The canonical text of the parsed config: the same for the same bindings, whatever the
    order of files and flags they came from."""
    return gin.config_str()
