"""bin/ entry points for a newcomer: --help lists the script's flags, TensorFlow's C++ start-up
lines are hidden, the wrong Python gets one line saying how to run, the TensorBoard command
works as printed."""
import importlib.util
import os
import shlex
import subprocess
import sys

from tests.cli.train_process import ROOT


def _bin(*args, python=(sys.executable,), env_drop=("TF_CPP_MIN_LOG_LEVEL",)):
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    return subprocess.run([*python, os.path.join(ROOT, "bin", "train"), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def _startup():
    spec = importlib.util.spec_from_file_location("_startup", os.path.join(ROOT, "bin",
                                                                          "_startup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_lists_the_flags_of_bin_train_without_tensorflow_noise():
    result = _bin("--help")  # exit status 1, as absl ends every --help
    for flag in ("--gin_file", "--gin_bindings", "--workdir", "--resume", "--overwrite",
                 "--tf_logs"):
        assert flag in result.stdout
    assert "oneDNN" not in result.stderr and "I0000" not in result.stderr, result.stderr


def test_a_python_without_the_dependencies_gets_one_line_saying_how_to_run():
    result = _bin("--help", python=(sys.executable, "-S", "-I"))  # no site-packages: no absl
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "make train" in lines[0] and ".venv/bin/python bin/train" in lines[0]


def test_tf_logs_are_asked_for_by_flag_or_environment(monkeypatch):
    startup = _startup()
    monkeypatch.delenv(startup.SHOW_TF_LOGS_ENV, raising=False)
    assert not startup.wants_tf_logs(["bin/train", "--gin_file=x.gin"])
    assert startup.wants_tf_logs(["bin/train", "--tf_logs"])
    monkeypatch.setenv(startup.SHOW_TF_LOGS_ENV, "1")
    assert startup.wants_tf_logs(["bin/train"])


def test_the_printed_tensorboard_command_names_an_executable_or_the_module():
    from tf_lottery.cli.run import tensorboard_command

    words = shlex.split(tensorboard_command("runs/x/tensorboard"))
    assert words[-2:] == ["--logdir", "runs/x/tensorboard"]
    if words[1:3] == ["-m", "tensorboard.main"]:
        assert importlib.util.find_spec("tensorboard.main") is not None
    else:
        assert os.path.basename(words[0]) == "tensorboard" and os.access(words[0], os.X_OK)
