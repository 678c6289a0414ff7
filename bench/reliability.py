"""Reliability tally: bin/train and bin/report treated the way a busy cluster treats runs.

    python bench/reliability.py [--quick] [--jobs 2] [--kills 30] [--seed 0]

Replays, on tiny runs of the offline Fashion-MNIST (tests/reliability/scenarios.py):
  bad_input     every bad start of scenarios.BAD_STARTS through bin/train (43 cases) and bad
                values through the Python constructors: one `error:` line (exit 1), no workdir
  workdir       --overwrite of a folder with a user's file, --resume with --overwrite, an
                unmarked folder, two concurrent starts on one workdir, a stale lock of a killed run
  sigkill       random SIGKILLs (half over an IMP run, half over a soft iEP run), rerun after
                each; the finished run must equal an uninterrupted one bit for bit
  corruption    every file of a finished soft iEP workdir truncated, then garbled, in turn;
                bin/train reruns (recomputing what is damaged) and bin/report / the ticket
                loader read it
  disk_full     a small tmpfs (skipped where it cannot be mounted) filling up at several points
                of a run; then room is made and the run reruns
  divergence    learning rate 1e6 on IMP: a finite loss growing by orders of magnitude
  files         modes under umask 022 and leftover temporary files of finished runs

and prints one row per scenario group: tried, survived with nothing lost, readable error, crash
(traceback, signal, hang) and lost (a finished run that differs from the uninterrupted one, or a
completed round changed). `--quick` runs a subset (a few minutes).
"""
import argparse
import concurrent.futures
import hashlib
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tests.reliability import scenarios  # noqa: E402

NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                        r"|[IWE]\d{4} [\d:. ]+\d+ \w+\.cc:\d+\] |To enable the following)")
SOFT_ARGS = [f"--gin_file={scenarios.SOFT}", *(f"--gin_bindings={b}" for b in scenarios.TINY)]
IMP_ARGS = [f"--gin_file={scenarios.IMP}", *(f"--gin_bindings={b}" for b in scenarios.TINY_IMP)]
LONGER = ["--gin_bindings=TrainingRecipe.epochs=2"]
OUTCOMES = ("survived", "readable", "crash", "lost")


def start(tool, *args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "bin", tool), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT, start_new_session=True)


def run(tool, *args, timeout=600):
    process = start(tool, *args)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        return subprocess.CompletedProcess(process.args, -999, out, err + "\nHANG")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def stderr_lines(result):
    return [line for line in result.stderr.splitlines()
            if line.strip() and not NATIVE_LOG.match(line)]


def error_line(result):
    """The one `error:` line of a failed run, or None when it failed otherwise."""
    lines = [line for line in stderr_lines(result) if not line.startswith("warning: ")]
    if result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "):
        return lines[0]
    return None


def crashed(result):
    return (result.returncode not in (0, 1) or "Traceback" in result.stderr
            or "Segmentation fault" in result.stderr)


def digests(folder, only=None):
    found = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, folder)
            if only is None or re.match(only, rel):
                with open(path, "rb") as f:
                    found[rel] = hashlib.sha256(f.read()).hexdigest()
    return found


def same_results(workdir, reference):
    """Every round's masks and metrics of the finished `workdir` equal the reference's."""
    import numpy as np

    from tf_lottery.search import rounds

    done, expected = rounds.completed_rounds(workdir), rounds.completed_rounds(reference)
    if done != expected:
        return False
    for index in done:
        ours, theirs = (rounds.load_round_masks(w, index) for w in (workdir, reference))
        if set(ours) != set(theirs) or any(not np.array_equal(ours[k], theirs[k]) for k in ours):
            return False
        a, b = (rounds.load_metrics(w, index) for w in (workdir, reference))
        if a["test_accuracy"] != b["test_accuracy"]:
            return False
    return True


class Tally:
    def __init__(self):
        self.rows, self.notes = {}, []

    def add(self, group, outcome, case, detail=""):
        assert outcome in OUTCOMES
        self.rows.setdefault(group, {o: 0 for o in OUTCOMES})[outcome] += 1
        if outcome in ("crash", "lost"):
            self.notes.append(f"{group}/{case}: {outcome}: {detail[-400:]}")
        print(f"  {group:11s} {case:42s} {outcome}{': ' + detail[:150] if detail else ''}",
              flush=True)

    def table(self):
        lines = ["| scenarios | tried | survived, nothing lost | readable error | crash | lost |",
                 "|---|---|---|---|---|---|"]
        total = {o: 0 for o in OUTCOMES}
        for group, counts in self.rows.items():
            lines.append(f"| {group} | {sum(counts.values())} | {counts['survived']} "
                         f"| {counts['readable']} | {counts['crash']} | {counts['lost']} |")
            for o in OUTCOMES:
                total[o] += counts[o]
        lines.append(f"| **all** | {sum(total.values())} | {total['survived']} "
                     f"| {total['readable']} | {total['crash']} | {total['lost']} |")
        return "\n".join(lines)


# -- scenario groups ----------------------------------------------------------------------------

def bad_inputs(tally, scratch, jobs, quick):
    made = scenarios.make_gin_files(scratch)
    cases = scenarios.BAD_STARTS[::4] if quick else scenarios.BAD_STARTS

    def one(case):
        workdir = os.path.join(scratch, f"bad_{case[0]}")
        args = [f"--gin_file={f}" for f in scenarios.resolve(case[1], made)]
        args += [f"--gin_bindings={b}" for b in scenarios.bindings_of(case)]
        return case, workdir, run("train", *args, f"--workdir={workdir}")

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for case, workdir, result in pool.map(one, cases):
            line = error_line(result)
            if crashed(result) or (result.returncode == 1 and line is None):
                tally.add("bad_input", "crash", case[0], result.stderr)
            elif result.returncode == 0 or os.path.exists(workdir):
                tally.add("bad_input", "lost", case[0], "accepted, or left files behind")
            elif all(text in line for text in case[3]):
                tally.add("bad_input", "readable", case[0], line)
            else:
                tally.add("bad_input", "crash", case[0], f"unexpected message: {line}")
    code = ("import math\nfrom tf_lottery.training.recipe import TrainingRecipe\n"
            "from tf_lottery.errors import TfLotteryError\n"
            "for v in (math.nan, math.inf, -math.inf, 'abc', None, 0):\n"
            "    try:\n        TrainingRecipe(learning_rate=v)\n        print('accepted', v)\n"
            "    except TfLotteryError as e:\n        print('error:', str(e).splitlines()[0])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    for line in result.stdout.splitlines():
        outcome = "readable" if line.startswith("error: TrainingRecipe.learning_rate") else "lost"
        tally.add("bad_input", outcome, "python TrainingRecipe(learning_rate=...)", line)
    if result.returncode:
        tally.add("bad_input", "crash", "python TrainingRecipe", result.stderr)


def workdir_cases(tally, scratch, reference, rng):
    group = "workdir"
    # --overwrite of a folder holding a user's file, with a bad name, then with a good config
    folder = os.path.join(scratch, "precious")
    os.makedirs(folder)
    open(os.path.join(folder, "precious"), "w").write("x")
    for name, extra in (("overwrite_foreign_bad_name", ["--gin_bindings=build_model.name='nope'"]),
                        ("overwrite_foreign", [])):
        result = run("train", *SOFT_ARGS, *extra, f"--workdir={folder}", "--overwrite")
        ok = error_line(result) and os.listdir(folder) == ["precious"]
        tally.add(group, "readable" if ok else ("crash" if crashed(result) else "lost"), name,
                  error_line(result) or result.stderr)
    # --resume --overwrite on a finished run
    copy = os.path.join(scratch, "finished")
    shutil.copytree(reference, copy)
    before = digests(copy)
    result = run("train", *SOFT_ARGS, f"--workdir={copy}", "--overwrite", "--resume")
    ok = error_line(result) and digests(copy) == before
    tally.add(group, "readable" if ok else "lost", "resume_with_overwrite",
              error_line(result) or result.stderr)
    # two concurrent starts on one new workdir, the second with another learning rate: one
    # runs, the other ends naming it, and what the winner prints is what the disk holds
    workdir = os.path.join(scratch, "concurrent")
    first = start("train", *SOFT_ARGS, f"--workdir={workdir}")
    time.sleep(rng.uniform(0, 12))
    second = run("train", *SOFT_ARGS, "--resume", "--gin_bindings=TrainingRecipe.learning_rate=0.2",
                 f"--workdir={workdir}")
    out, err = first.communicate(timeout=600)
    first = subprocess.CompletedProcess(first.args, first.returncode, out, err)
    winners = [r for r in (first, second) if r.returncode == 0]
    losers = [r for r in (first, second) if r.returncode != 0]
    ok = len(winners) == 1 and error_line(losers[0]) and "is in use by pid" in error_line(losers[0])
    if ok:
        from tf_lottery.search import rounds

        printed = re.search(r"test accuracy (\d\.\d+)\n\[tf_lottery\] exported", winners[0].stdout)
        last = rounds.all_metrics(workdir)[-1]
        ok = printed and float(printed.group(1)) == round(last["test_accuracy"], 4)
    tally.add(group, "readable" if ok else ("crash" if any(map(crashed, (first, second)))
                                            else "lost"), "concurrent_start",
              " / ".join(filter(None, map(error_line, (first, second)))))
    # a run killed while holding the lock: the next one takes it over and finishes
    workdir = os.path.join(scratch, "stale_lock")
    process = start("train", *SOFT_ARGS, f"--workdir={workdir}")
    lock = os.path.join(workdir, ".tf_lottery.lock")
    deadline = time.time() + 120
    while not os.path.exists(lock) and time.time() < deadline:  # killed once it holds the lock
        time.sleep(0.2)
    time.sleep(rng.uniform(0, 5))
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    held = os.path.exists(lock)
    result = run("train", *SOFT_ARGS, f"--workdir={workdir}")
    ok = (result.returncode == 0 and ("took over the lock of pid" in result.stdout or not held)
          and same_results(workdir, reference))
    tally.add(group, "survived" if ok else ("crash" if crashed(result) else "lost"),
              "stale_lock_taken_over", "" if ok else result.stderr[-300:])


def sigkills(tally, scratch, kills, rng, references):
    group = "sigkill"
    for name, args, reference, share in (("imp", IMP_ARGS, references["imp"], kills // 2),
                                         ("soft_iep", SOFT_ARGS, references["soft"],
                                          kills - kills // 2)):
        workdir = os.path.join(scratch, f"killed_{name}")
        duration = references[f"{name}_seconds"]
        for k in range(share):
            process = start("train", *args, *LONGER, f"--workdir={workdir}")
            time.sleep(rng.uniform(2.0, duration))
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            if process.returncode not in (0, -signal.SIGKILL):
                tally.add(group, "crash", f"{name} kill {k + 1}", err)
            if process.returncode == 0:  # finished before the kill: start over
                shutil.rmtree(workdir)
        result = run("train", *args, *LONGER, f"--workdir={workdir}")
        if result.returncode != 0:
            tally.add(group, "crash", f"{name} final rerun", result.stderr)
            continue
        same = same_results(workdir, reference)
        for k in range(share):
            tally.add(group, "survived" if same else "lost", f"{name} kill {k + 1}")


def corruption(tally, scratch, reference, jobs, quick, rng):
    group = "corruption"
    files = sorted(digests(reference))
    if quick:
        files = [f for f in files if f.startswith(("round_01", "init", "config", "ticket/ticket"))]

    def damage(path, how):
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            if how == "truncate":
                f.truncate(size // 2)
            else:
                f.seek(size // 3)
                f.write(bytes(rng.randrange(256) for _ in range(min(64, max(size // 3, 1)))))

    def one(item):
        rel, how = item
        workdir = os.path.join(scratch, f"c_{how}_{rel.replace('/', '_')}")
        shutil.copytree(reference, workdir)
        damage(os.path.join(workdir, rel), how)
        results = []
        if rel.startswith("ticket/ticket"):
            code = ("import sys\nfrom tf_lottery.export import load_ticket\n"
                    "from tf_lottery.errors import TfLotteryError\ntry:\n"
                    "    load_ticket(sys.argv[1])\nexcept TfLotteryError as e:\n"
                    "    print('error:', str(e).splitlines()[0], file=sys.stderr)\n"
                    "    sys.exit(1)\n")
            results.append(("load_ticket", subprocess.run(
                [sys.executable, "-c", code, os.path.join(workdir, rel)], capture_output=True,
                text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})))
        if rel.startswith(("round_", "init")):
            results.append(("report", run("report", f"--workdir={workdir}",
                                          f"--out={workdir}_report")))
        rerun = run("train", *SOFT_ARGS, f"--workdir={workdir}")
        results.append(("train", rerun))
        return rel, how, workdir, results

    items = [(rel, how) for rel in files for how in ("truncate", "garble")]
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for rel, how, workdir, results in pool.map(one, items):
            case = f"{how} {rel}"
            bad = [(tool, r) for tool, r in results if crashed(r)
                   or (r.returncode == 1 and error_line(r) is None)]
            if bad:
                tally.add(group, "crash", case, f"{bad[0][0]}: {bad[0][1].stderr}")
                continue
            train = results[-1][1]
            if train.returncode == 0:
                outcome = "survived" if same_results(workdir, reference) else "lost"
                tally.add(group, outcome, case)
            else:
                tally.add(group, "readable", case, error_line(train))
            shutil.rmtree(workdir, ignore_errors=True)


def disk_full(tally, scratch, reference, quick):
    group = "disk_full"
    mount = os.path.join(scratch, "tmpfs")
    os.makedirs(mount)
    sizes = ["1000k", "2300k"] if quick else ["600k", "1000k", "1400k", "1700k", "2000k",
                                             "2300k", "2600k"]
    for size in sizes:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount],
                              capture_output=True, text=True)
        if done.returncode:
            print(f"  disk_full skipped: cannot mount a tmpfs ({done.stderr.strip()})")
            tally.notes.append(f"disk_full skipped: cannot mount a tmpfs ({done.stderr.strip()})")
            return
        try:
            workdir = os.path.join(mount, "run")
            full = run("train", *SOFT_ARGS, f"--workdir={workdir}")
            line = error_line(full)
            subprocess.run(["mount", "-o", "remount,size=64m", mount], check=True)
            again = run("train", *SOFT_ARGS, f"--workdir={workdir}")
            if crashed(full) or (full.returncode == 1 and not line) or crashed(again):
                tally.add(group, "crash", f"tmpfs {size}", full.stderr + again.stderr)
            elif again.returncode == 0 and same_results(workdir, reference):
                tally.add(group, "readable" if line else "survived", f"tmpfs {size}",
                          line or "had room")
            else:
                tally.add(group, "lost", f"tmpfs {size}", again.stderr)
        finally:
            subprocess.run(["umount", mount], check=False)


def divergence(tally, scratch):
    workdir = os.path.join(scratch, "lr1e6")
    result = run("train", *IMP_ARGS, "--gin_bindings=TrainingRecipe.learning_rate=1e6",
                 f"--workdir={workdir}")
    line = error_line(result)
    ok = line and "training diverged" in line
    tally.add("divergence", "readable" if ok else ("crash" if crashed(result) else "lost"),
              "imp lr 1e6", line or result.stderr[-300:])


def files(tally, references):
    for name in ("soft", "imp"):
        workdir = references[name]
        modes = {rel: os.stat(os.path.join(workdir, rel)).st_mode & 0o777
                 for rel in digests(workdir)}
        wrong = {rel: oct(m) for rel, m in modes.items() if m != 0o644}
        leftovers = [rel for rel in modes if re.search(r"\.tmp|_temp", rel)]
        ok = not wrong and not leftovers
        tally.add("files", "survived" if ok else "lost", f"{name}: umask 022, no temporaries",
                  f"{wrong} {leftovers}" if not ok else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subset, a few minutes")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel where independent")
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="scenario groups to run (default: all)")
    args = parser.parse_args()
    os.umask(0o022)
    rng = random.Random(args.seed)
    scratch = tempfile.mkdtemp(prefix="tf_lottery_reliability_")
    tally = Tally()
    started = time.time()
    wanted = lambda name: not args.only or name in args.only  # noqa: E731
    print(f"reliability tally: {platform.node()}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, scratch {scratch}", flush=True)
    references = {}
    for name, run_args, extra in (("soft", SOFT_ARGS, []), ("imp", IMP_ARGS, []),
                                  ("soft_iep", SOFT_ARGS, LONGER), ("imp_long", IMP_ARGS, LONGER)):
        if name in ("soft_iep", "imp_long") and not wanted("sigkill"):
            continue
        workdir = os.path.join(scratch, f"reference_{name}")
        t = time.time()
        result = run("train", *run_args, *extra, f"--workdir={workdir}")
        if result.returncode:
            sys.exit(f"the reference run {name} failed:\n{result.stderr[-3000:]}")
        references[name] = workdir
        references[f"{name}_seconds"] = time.time() - t
    if wanted("bad_input"):
        bad_inputs(tally, scratch, args.jobs, args.quick)
    if wanted("workdir"):
        workdir_cases(tally, scratch, references["soft"], rng)
    if wanted("divergence"):
        divergence(tally, scratch)
    if wanted("files"):
        files(tally, references)
    if wanted("disk_full"):
        disk_full(tally, scratch, references["soft"], args.quick)
    if wanted("corruption"):
        corruption(tally, scratch, references["soft"], args.jobs, args.quick, rng)
    if wanted("sigkill"):
        kills = 6 if args.quick else args.kills
        sigkills(tally, scratch, kills, rng,
                 {"imp": references["imp_long"], "soft": references["soft_iep"],
                  "imp_seconds": references["imp_long_seconds"],
                  "soft_iep_seconds": references["soft_iep_seconds"]})
    print()
    print(tally.table())
    for note in tally.notes:
        print(f"- {note}")
    print(f"\n{time.time() - started:.0f} s; python bench/reliability.py "
          f"{' '.join(sys.argv[1:])}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
