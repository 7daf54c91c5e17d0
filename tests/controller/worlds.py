"""Worlds for the controller to run in, with the Jobs' ends in the test's hands, and the
scenarios it meets there: shared by test_crashes.py and test_two_controllers.py.

A World is a namespace of its own, a pair of queues and the stand-in's gates. The Jobs'
pods run on a local node, as in test_job_outcomes.py, but what they run is a stand-in for
the ingest job that waits until the test lets it end, with the exit code of the scenario:
whether a message comes back before or after a Job ends is then the test's choice, not a
race. The real ingest job's exit codes are test_job_outcomes.py's subject.
"""

import functools
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rates_controller import jobs
from rates_controller import kube as kube_boundary
from rates_controller.controller import Controller
from rates_controller.metrics import Metrics
from rates_controller.queue import Queue
from rates_controller.settings import Settings
from rates_core import logs
from tests.support.local_node import LocalNode
from tests.support.poll import wait_for
from tests.support.uploads import Queues, ingest_jobs

# Passes a controller may take to finish a scenario; needing more means something is stuck.
MAX_PASSES = 15

STAND_IN = '''
import json, os, pathlib, sys, time

# The pod's name is its Job's name and a suffix; the test writes the exit code to a file
# named after the Job when it lets the Job end.
gate = pathlib.Path(os.environ["STAND_IN_GATES"]) / os.environ["HOSTNAME"].rsplit("-", 1)[0]
while not gate.exists():
    time.sleep(0.05)
code = int(gate.read_text())
if code:
    print(json.dumps({"error": f"the stand-in exits {code}"}))
sys.exit(code)
'''


@dataclass
class World:
    """One run of a scenario: its own namespace, queues and stand-in gates."""

    kube: object
    namespace: str
    queues: Queues
    gates: Path
    settings: Settings
    exit_code: int  # how the scenario's Jobs end
    # Called once the running Jobs have ended, by whoever keeps count of them.
    on_jobs_end: list[Callable[[], None]] = field(default_factory=list)

    def controller(self, wrap: Callable[[object, str], object] | None = None) -> Controller:
        """A new Controller (a new pod); ``wrap(client, role)``, if given, stands between
        it and each of its clients (roles ``kube``, ``uploads``, ``dead``)."""
        api = kube_boundary.JobsApi(self.kube.api_client, self.namespace)
        uploads = Queue(self.queues.client, self.queues.uploads_url)
        dead = Queue(self.queues.client, self.queues.dead_url)
        if wrap:
            api, uploads, dead = wrap(api, "kube"), wrap(uploads, "uploads"), wrap(dead, "dead")
        return Controller(self.settings, api, uploads, dead, Metrics(), logs.get_logger("rates_controller"))

    def jobs(self) -> list:
        return ingest_jobs(self.kube, self.namespace)

    def running(self) -> list[str]:
        return [j.metadata.name for j in self.jobs() if jobs.finished(j) is None]

    def settled(self) -> bool:
        return self.queues.counts() == (0, 0) and all(jobs.HANDLED in j.metadata.labels for j in self.jobs())

    def check_one_job_runs(self) -> None:
        files = Counter(file_of(name) for name in self.running())
        assert max(files.values(), default=0) <= 1, f"two Jobs of one file run at once: {self.running()}"

    def let_jobs_end(self) -> None:
        names = self.running()
        for name in names:
            (self.gates / f"{name}.new").write_text(str(self.exit_code))
            os.replace(self.gates / f"{name}.new", self.gates / name)  # never read half-written
        for hook in self.on_jobs_end:
            hook()
        wait_for(lambda: not set(names) & set(self.running()), timeout=60, what=f"Jobs {names} to end")

    def wait_messages_back(self) -> None:
        wait_for(lambda: self.queues.counts()[1] == 0, timeout=self.settings.visibility_timeout + 30,
                 interval=0.1, what="the messages in flight to come back")

    def time_passes(self) -> None:
        """What happens while the controller waits: messages in flight come back, and
        failing that, the running Jobs end."""
        if self.queues.counts()[1]:
            self.wait_messages_back()
        elif self.running():
            self.let_jobs_end()


class Intercepted:
    """Stands in for a controller's JobsApi or Queue: its calls to the API server and SQS
    go through ``_call`` (a subclass's), everything else straight to the real one."""

    OPERATIONS = frozenset({"create", "get", "unhandled", "mark_handled", "termination_message",
                            "receive", "delete", "retry_later", "send"})

    def __init__(self, real, role: str):
        self._real, self._role = real, role

    def __getattr__(self, name: str):
        attribute = getattr(self._real, name)
        if name not in self.OPERATIONS:
            return attribute
        return functools.partial(self._call, f"{self._role}.{name}", attribute)

    def _call(self, operation: str, method, *args):
        raise NotImplementedError


def changes(operation: str, args: tuple, result) -> bool:
    """Whether the call changed something outside the controller's process."""
    if operation == "uploads.receive":
        return bool(result)
    if operation == "uploads.delete":
        return bool(args[0])
    if operation == "kube.create":
        return result  # False: the name was taken, nothing was made
    return operation in ("kube.mark_handled", "uploads.retry_later", "dead.send")


def file_of(job_name: str) -> str:
    return job_name.rsplit("-", 1)[0]  # the name less the attempt


def run_until_settled(world: World, controller: Controller) -> None:
    for _ in range(MAX_PASSES):
        controller.step()
        world.check_one_job_runs()
        if world.settled():
            return
        world.time_passes()
    labels = [(j.metadata.name, j.metadata.labels.get(jobs.HANDLED)) for j in world.jobs()]
    raise AssertionError(f"not settled after {MAX_PASSES} passes: queue (visible, in flight) "
                         f"{world.queues.counts()}, Jobs and what was done with them {labels}")


# --- scenarios ---------------------------------------------------------------------


def s3_event(key: str) -> str:
    """An ObjectCreated notification as S3 writes it (eventVersion marks it as S3's)."""
    return json.dumps({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                    "eventTime": "2016-01-01T00:00:00.000Z", "s3": {
                                        "bucket": {"name": "uploads"},
                                        "object": {"key": key, "size": 10, "eTag": "e", "sequencer": "0A"}}}]})


def upload(world: World) -> None:
    world.queues.send(s3_event("2016/jan.csv"))


def poison(world: World) -> None:
    world.queues.send("this is not an S3 event")


def set_aside_and_sent_back(world: World) -> None:
    """An upload whose round of Jobs failed, set aside; the operator sends it back (a redrive)."""
    upload(world)
    run_until_settled(world, world.controller())
    [dead] = world.queues.dead_letters()
    world.queues.send(dead["body"])


@dataclass(frozen=True)
class Scenario:
    name: str
    start: Callable[[World], None]  # what the controller is to meet
    covers: frozenset[str]  # calls the sweep must meet, or it tests less than it says
    exit_code: int = 0  # of each Job
    max_attempts: int = 3
    jobs: int = 1  # the file's Jobs, in the end
    reason: str | None = None  # of its dead-letter entry; None: it loads


ROUND = frozenset({"uploads.receive", "kube.create", "uploads.delete", "kube.mark_handled"})
SET_ASIDE = ROUND | {"kube.termination_message", "dead.send"}
# Its first round fails and is set aside; sent back, the file fails again.
REDRIVEN = Scenario("redriven", set_aside_and_sent_back, SET_ASIDE | {"kube.get"}, exit_code=1, max_attempts=1,
                    jobs=2, reason="the file did not load in 1 Jobs")
SCENARIOS = [
    Scenario("loads", upload, ROUND),
    Scenario("keeps-failing", upload, SET_ASIDE, exit_code=1, max_attempts=2, jobs=2,
             reason="the file did not load in 2 Jobs (BackoffLimitExceeded"),
    Scenario("invalid", upload, SET_ASIDE, exit_code=2,
             reason="the ingest job rejected the file (PodFailurePolicy"),
    Scenario("poison", poison, frozenset({"uploads.receive", "dead.send", "uploads.delete"}), jobs=0,
             reason="not JSON"),
    REDRIVEN,
]


def check_outcome(world: World, scenario: Scenario, copies: int) -> None:
    """The scenario's one outcome, with ``copies`` dead-letter entries if it is a set-aside
    (more than one only where the send is known to have been made more than once)."""
    found = world.jobs()
    assert len(found) == scenario.jobs, [j.metadata.name for j in found]
    rounds = Counter((file_of(j.metadata.name), j.metadata.annotations[jobs.ROUND_START]) for j in found)
    assert max(rounds.values(), default=0) <= scenario.max_attempts, rounds
    dead = world.queues.dead_letters()
    if scenario.reason is None:
        assert dead == [] and found[-1].metadata.labels[jobs.HANDLED] == "succeeded"
        return
    assert len(dead) == copies, dead
    assert dead.count(dead[0]) == len(dead), dead  # a copy of the one entry, not a second outcome
    assert scenario.reason in dead[0]["reason"]


class SharedNode(LocalNode):
    """A local node for the namespaces of many runs at once, added as they are made: one
    list of pods a poll, however many namespaces there are."""

    def __init__(self, api_client, **kwargs):
        super().__init__(api_client, **kwargs)
        self.namespaces = set()

    def _pods(self) -> list:
        return [pod for pod in self.core.list_pod_for_all_namespaces(label_selector=jobs.SELECTOR).items
                if pod.metadata.namespace in self.namespaces]
