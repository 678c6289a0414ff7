"""Command-line entries (bin/train, bin/report): what they share."""
import sys

from absl import app, flags

flags.DEFINE_bool("tf_logs", False, "show TensorFlow's C++ start-up log lines (hidden by "
                  "default; also TF_LOTTERY_TF_LOGS=1)")


def run_app(main, module_name):
    """absl's app.run(main) (main returns the exit status), with `--help` listing the flags
    that `module_name` and this package define: absl lists only the main module's own flags,
    and bin/train, the main module, defines none (they were shown by --helpfull only)."""
    for name in (module_name, __name__):
        for flag in flags.FLAGS.get_flags_for_module(name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(lambda argv: sys.exit(main(argv)))
