"""bin/train: run one gin-configured experiment.

    bin/train --gin_file=gin_configs/soft_iep.gin [--gin_file=more.gin]
              [--gin_bindings="TrainingRecipe.epochs = 2"] [--workdir=runs/x] [--resume|--overwrite]

The workdir defaults to runs/<name of the last gin file>. The whole configuration is checked
(bindings, values, data, network) before anything is written. The requested config is written to
workdir/config.gin; a rerun with the same config continues where the last run stopped, a
different config is refused unless --resume (continue anyway) or --overwrite (start afresh: only
a workdir tf_lottery created and holding only its files, unless --overwrite_foreign). One process
at a time holds a workdir (a lock file naming its pid and host; see tf_lottery/workdir.py).
"""
import os
import sys

from absl import flags, logging

from tf_lottery.cli import run_app

flags.DEFINE_multi_string("gin_file", [], "gin config file(s); later files override earlier ones")
flags.DEFINE_multi_string("gin_bindings", [], "extra gin bindings, e.g. 'TrainingRecipe.epochs=2'")
flags.DEFINE_string("workdir", None, "run directory (default: runs/<gin file name>)")
flags.DEFINE_bool("resume", False, "continue in a workdir even if its config differs")
flags.DEFINE_bool("overwrite", False, "delete the contents of the workdir (only a tf_lottery "
                  "workdir holding nothing but tf_lottery's files) and start afresh")
flags.DEFINE_bool("overwrite_foreign", False, "with --overwrite: also delete a workdir that "
                  "holds files tf_lottery did not write")
flags.DEFINE_bool("export", True, "export the final ticket (SavedModel + ticket file)")
FLAGS = flags.FLAGS


def default_workdir(gin_files):
    name = os.path.splitext(os.path.basename(gin_files[-1]))[0] if gin_files else "run"
    return os.path.join("runs", name)


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # absl's default, INFO, shows every library's chatter
        logging.set_verbosity(logging.WARNING)
    from tf_lottery.config import parse_config
    from tf_lottery.errors import TfLotteryError

    try:
        parse_config(FLAGS.gin_file, FLAGS.gin_bindings)
        from tf_lottery.cli.run import train

        train(FLAGS.workdir or default_workdir(FLAGS.gin_file), resume=FLAGS.resume,
              overwrite=FLAGS.overwrite, export=FLAGS.export,
              overwrite_foreign=FLAGS.overwrite_foreign)
    except TfLotteryError as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 a workdir that became unwritable or full
        from tf_lottery.workdir import write_error

        error = write_error(e, FLAGS.workdir or default_workdir(FLAGS.gin_file))
        if error is None:
            raise
        print(f"error: cannot write {error.filename}: {error.strerror}; completed rounds are "
              f"intact, rerun the same command to continue", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue from the last checkpoint",
              file=sys.stderr)
        return 130
    return 0


def run():
    run_app(main, __name__)


if __name__ == "__main__":
    run()
