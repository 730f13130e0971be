"""The held log handler of ``inferd serve`` (records wait until the server is ready, problems never wait, nothing is
lost at exit), and what a serving process has not imported by the time it is ready."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from fakes import ADDER, write_model
from inferd.cli.logs import HeldHandler


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(self.format(record))


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"held-{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger


def test_records_wait_until_delivered_and_keep_their_order():
    made: list[Collect] = []
    held = HeldHandler(lambda: made.append(Collect()) or made[-1])
    log = _logger(held)
    log.info("one")
    log.debug("two")
    assert made == []  # nothing built while records are held
    held.deliver()
    log.info("three")
    assert made[0].seen == ["one", "two", "three"]
    held.deliver()
    assert len(made) == 1


def test_a_warning_is_never_held_and_takes_what_waited_with_it():
    made: list[Collect] = []
    held = HeldHandler(lambda: made.append(Collect()) or made[-1])
    log = _logger(held)
    log.info("starting")
    log.warning("trouble")
    assert made[0].seen == ["starting", "trouble"]


def test_closing_delivers_what_is_held_and_builds_nothing_when_nothing_is():
    made: list[Collect] = []
    held = HeldHandler(lambda: made.append(Collect()) or made[-1])
    HeldHandler(lambda: made.append(Collect()) or made[-1]).close()
    assert made == []
    _logger(held).info("last words")
    held.close()
    assert made[0].seen == ["last words"]


SCRIPT = """
import json, os, sys
import inferd.server.runner as runner
shown = runner._log_readiness
def at_ready(*args):
    shown(*args)
    print(json.dumps({"ready": args[0].ready(), "modules": sorted(sys.modules)}), flush=True)
    os._exit(0)
runner._log_readiness = at_ready
sys.argv = ["inferd", "serve", sys.argv[1], "--http-port", "0", "--grpc-port", "0"]
from inferd.cli.main import main
main()
"""

NOT_BEFORE_READY = ("rich", "typer", "click", "fastapi", "starlette", "prometheus_client",
                    "inferd.batch.job", "inferd.batch.run", "pyarrow")


def test_a_serving_process_is_ready_before_it_imports_what_only_some_routes_need(repo_root, tmp_path):
    write_model(repo_root, "adder", ADDER)
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(repo_root)], capture_output=True, text=True, timeout=120,
                         check=True, cwd=tmp_path)
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["ready"]
    modules = set(found["modules"])
    assert "inferd.dataplane" in modules  # the check sees what the process imported
    assert sorted(m for m in modules if m.split(".")[0] in NOT_BEFORE_READY or m in NOT_BEFORE_READY) == []


def test_text_logs_into_a_pipe_are_plain_lines_not_padded():
    script = ("import logging; from inferd.cli.logs import configure_logging; configure_logging('info'); "
              "logging.getLogger('inferd.repository').info('model digits version 1 ready')")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    [line] = run.stderr.splitlines()
    assert line.endswith(" INFO inferd.repository: model digits version 1 ready")  # no run of spaces after it
    assert len(line) < 100
