#!/usr/bin/env python3
"""Cold start of the packaged handler: exec `lookout-reminders serve` -> first answer on GET /.

Usage: python3 scripts/measure-cold-start.py dist/app [RUNS]   (after scripts/package.sh)
Starts the handler RUNS times (default 10) with local-source settings in a scratch folder.
"""
import os, socket, subprocess, sys, tempfile, time, urllib.request, statistics, shutil
app = os.path.abspath(sys.argv[1]); runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
times = []
for i in range(runs):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    work = tempfile.mkdtemp()
    export = os.path.join(work, "export.csv"); open(export, "w").write("x\n")
    env = dict(os.environ, FUNCTIONS_CUSTOMHANDLER_PORT=str(port), REMINDERS_EXPORT_PATH=export,
               REMINDERS_STATE_DIR=os.path.join(work, "state"), REMINDERS_OUTBOX_DIR=os.path.join(work, "outbox"))
    t0 = time.perf_counter()
    p = subprocess.Popen([os.path.join(app, "lookout-reminders"), "serve"], cwd=app, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                r.read(); break
        except Exception:
            if p.poll() is not None:
                sys.exit("handler exited: " + p.stderr.read().decode()[:500])
            time.sleep(0.002)
    times.append((time.perf_counter() - t0) * 1000)
    p.terminate(); p.wait(); shutil.rmtree(work)
times.sort()
print(f"{runs} starts: min {times[0]:.0f} ms, median {statistics.median(times):.0f} ms, max {times[-1]:.0f} ms")
