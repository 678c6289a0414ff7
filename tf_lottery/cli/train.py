"""bin/train: run one gin-configured experiment.

    bin/train --gin_file=gin_configs/soft_iep.gin [--gin_file=more.gin]
              [--gin_bindings="TrainingRecipe.epochs = 2"] [--workdir=runs/x] [--resume|--overwrite]

The workdir defaults to runs/<name of the last gin file>. The requested config is written to
workdir/config.gin; a rerun with the same config continues where the last run stopped, a
different config is refused unless --resume (continue anyway) or --overwrite (start afresh).
"""
import os
import shutil
import sys

from absl import app, flags

flags.DEFINE_multi_string("gin_file", [], "gin config file(s); later files override earlier ones")
flags.DEFINE_multi_string("gin_bindings", [], "extra gin bindings, e.g. 'TrainingRecipe.epochs=2'")
flags.DEFINE_string("workdir", None, "run directory (default: runs/<gin file name>)")
flags.DEFINE_bool("resume", False, "continue in a workdir even if its config differs")
flags.DEFINE_bool("overwrite", False, "delete the workdir and start afresh")
flags.DEFINE_bool("export", True, "export the final ticket (SavedModel + ticket file)")
FLAGS = flags.FLAGS

CONFIG_FILE = "config.gin"


def default_workdir(gin_files):
    name = os.path.splitext(os.path.basename(gin_files[-1]))[0] if gin_files else "run"
    return os.path.join("runs", name)


def prepare_workdir(workdir, config_text, resume, overwrite):
    """Create or check the workdir; returns 'new', 'same' or 'resumed'."""
    from tf_lottery.errors import ConfigError

    path = os.path.join(workdir, CONFIG_FILE)
    if overwrite and os.path.exists(workdir):
        shutil.rmtree(workdir)
    state = "new"
    if os.path.exists(path):
        with open(path) as f:
            previous = f.read()
        if previous != config_text and not resume:
            raise ConfigError(f"workdir {workdir} holds a run with another config ({path}); "
                              "use --resume to continue it anyway, --overwrite to start afresh, "
                              "or another --workdir")
        state = "same" if previous == config_text else "resumed"
    try:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            f.write(config_text)
    except OSError as e:
        raise ConfigError(f"cannot write to workdir {workdir}: {e.strerror}") from None
    return state


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tf_lottery.config import parse_config, requested_config
    from tf_lottery.errors import TfLotteryError

    try:
        parse_config(FLAGS.gin_file, FLAGS.gin_bindings)
        workdir = FLAGS.workdir or default_workdir(FLAGS.gin_file)
        state = prepare_workdir(workdir, requested_config(),
                                FLAGS.resume, FLAGS.overwrite)
        from tf_lottery.cli.run import run_experiment

        run_experiment(workdir, state, export=FLAGS.export)
    except TfLotteryError as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue from the last checkpoint",
              file=sys.stderr)
        return 130
    return 0


def run():
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    run()
