"""The controller killed at every step, and a fresh one (a restarted pod) taking over.

Each scenario runs once without a crash, recording the controller's calls to the API
server and SQS. Then, for each point of that sequence, a controller dies there - before
the call, or just after it took effect - and a new Controller, with none of the dead one's
memory, runs until nothing is left to do; the invariants are checked then:

* the file ends in one outcome: its Job succeeded, or the dead-letter queue has its
  entry with the reason (twice, the same entry, only where the controller died between
  sending it and noting that on the Job or deleting the message: at least once);
* the file gets the Jobs it would have got without the crash, no round more than
  MAX_ATTEMPTS, and never two of its Jobs run at once (checked after every pass);
* every message is deleted in the end, none is left in flight, every Job is handled.

The Jobs' pods run on a local node, as in test_job_outcomes.py, but what they run is a
stand-in for the ingest job that waits until the test lets it end, with the exit code of
the scenario: whether a message comes back before or after a Job ends is then the test's
choice, not a race. The real ingest job's exit codes are test_job_outcomes.py's subject.
"""

import functools
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import boto3
import pytest
from kubernetes import client

from rates_controller import jobs
from rates_controller import kube as kube_boundary
from rates_controller.controller import Controller
from rates_controller.metrics import Metrics
from rates_controller.queue import Queue
from rates_controller.settings import Settings
from rates_core import logs
from tests.controller.conftest import settings_for
from tests.support.aws import unique_name
from tests.support.local_node import LocalNode
from tests.support.poll import wait_for
from tests.support.uploads import JOB_SERVICE_ACCOUNT, Queues, ingest_jobs, new_queues

pytestmark = pytest.mark.kube

# Seconds a received message stays hidden: short, so that a dead controller's messages
# come back soon (moto honours it), and still far more than a pass takes to delete them.
VISIBILITY = 2
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


class Killed(BaseException):
    """The controller's process dies here. Not an Exception: the controller catches those
    (one odd message must not stop its loop), and nothing can catch a SIGKILL."""


@dataclass(frozen=True)
class Call:
    operation: str  # e.g. kube.create, uploads.receive, dead.send
    changed: bool  # it changed something outside the process
    both_pending: bool  # afterwards a message was in flight and a Job was running


@dataclass
class Plan:
    """Where the controller dies (its ``at``-th call, ``after`` the call took effect or
    before), and what its calls have done: each call, the messages it has in flight and
    the Jobs it made that still run."""

    at: int | None = None
    after: bool = False
    calls: list[Call] = field(default_factory=list)
    in_flight: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)

    def note(self, operation: str, args: tuple, result) -> None:
        if operation == "uploads.receive":
            self.in_flight |= {m.id for m in result}
        elif operation == "uploads.delete":
            self.in_flight -= {m.id for m in args[0]}
        elif operation == "kube.create" and result:
            self.running.add(args[0]["metadata"]["name"])
        self.calls.append(Call(operation, _changes(operation, args, result),
                               bool(self.in_flight and self.running)))


def _changes(operation: str, args: tuple, result) -> bool:
    if operation == "uploads.receive":
        return bool(result)
    if operation == "uploads.delete":
        return bool(args[0])
    if operation == "kube.create":
        return result  # False: the name was taken, nothing was made
    return operation in ("kube.mark_handled", "uploads.retry_later", "dead.send")


class Dying:
    """Stands in for the controller's JobsApi or Queue: calls go through to the real one,
    and the process dies at the plan's call."""

    OPERATIONS = {"create", "get", "unhandled", "mark_handled", "termination_message",
                  "receive", "delete", "retry_later", "send"}

    def __init__(self, real, role: str, plan: Plan):
        self._real, self._role, self._plan = real, role, plan

    def __getattr__(self, name: str):
        attribute = getattr(self._real, name)
        if name not in self.OPERATIONS:
            return attribute
        return functools.partial(self._call, f"{self._role}.{name}", attribute)

    def _call(self, operation: str, method, *args):
        plan = self._plan
        number = len(plan.calls) + 1
        if plan.at == number and not plan.after:
            raise Killed(f"before call {number}, {operation}")
        result = method(*args)
        plan.note(operation, args, result)
        if plan.at == number:
            raise Killed(f"after call {number}, {operation}")
        return result


@dataclass
class World:
    """One run of a scenario: its own namespace, queues and stand-in gates."""

    kube: object
    namespace: str
    queues: Queues
    gates: Path
    settings: Settings
    exit_code: int  # how the scenario's Jobs end
    plan: Plan | None = None  # of the controller that is to die

    def controller(self, plan: Plan | None = None) -> Controller:
        api = kube_boundary.JobsApi(self.kube.api_client, self.namespace)
        uploads = Queue(self.queues.client, self.queues.uploads_url)
        dead = Queue(self.queues.client, self.queues.dead_url)
        if plan:
            api, uploads, dead = Dying(api, "kube", plan), Dying(uploads, "uploads", plan), Dying(dead, "dead", plan)
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
        if self.plan:
            self.plan.running.clear()
        wait_for(lambda: not set(names) & set(self.running()), timeout=60, what=f"Jobs {names} to end")

    def wait_messages_back(self) -> None:
        wait_for(lambda: self.queues.counts()[1] == 0, timeout=VISIBILITY + 30, interval=0.1,
                 what="the messages in flight to come back")

    def time_passes(self) -> None:
        """What happens while the controller waits: messages in flight come back, and
        failing that, the running Jobs end."""
        if self.queues.counts()[1]:
            self.wait_messages_back()
        elif self.running():
            self.let_jobs_end()


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


# --- where to crash ----------------------------------------------------------------


@dataclass(frozen=True)
class CrashPoint:
    at: int  # the call, counted from 1
    after: bool  # once it took effect, or before it
    operation: str
    jobs_first: bool = False  # the dead controller's Jobs end before its messages come back

    def __str__(self) -> str:
        order = "; its Jobs end before its messages come back" if self.jobs_first else ""
        return f"killed {'after' if self.after else 'before'} call {self.at} ({self.operation}){order}"


def crash_points(trace: list[Call]) -> list[CrashPoint]:
    """Before and after every call of ``trace``, less the points that leave the world as an
    earlier one does: dying just before a call, or just after one that changed nothing (a
    read, an empty receive), leaves what dying just after the last change leaves, and the
    process's memory is lost either way. Where a message is in flight and a Job runs, both
    orders of what comes back first."""
    points, reached = [], set()
    changes, both_pending = 0, False
    for number, call in enumerate(trace, 1):
        for after in (False, True):
            if after:
                changes, both_pending = changes + call.changed, call.both_pending
            if changes not in reached:
                reached.add(changes)
                point = CrashPoint(number, after, call.operation)
                points += [point, replace(point, jobs_first=True)] if both_pending else [point]
    return points


def sent_twice(calls: list[Call]) -> bool:
    """Whether the controller died between sending to the dead-letter queue and noting it
    (labelling the Job, deleting the message): the next one sends the same entry again."""
    sends = [i for i, call in enumerate(calls) if call.operation == "dead.send"]
    return bool(sends) and not any(call.changed and call.operation in ("kube.mark_handled", "uploads.delete")
                                   for call in calls[sends[-1]:])


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


def check_outcome(world: World, scenario: Scenario, twice: bool) -> None:
    found = world.jobs()
    assert len(found) == scenario.jobs, [j.metadata.name for j in found]
    rounds = Counter((file_of(j.metadata.name), j.metadata.annotations[jobs.ROUND_START]) for j in found)
    assert max(rounds.values(), default=0) <= scenario.max_attempts, rounds
    dead = world.queues.dead_letters()
    if scenario.reason is None:
        assert dead == [] and found[-1].metadata.labels[jobs.HANDLED] == "succeeded"
        return
    assert len(dead) == (2 if twice else 1), dead
    assert dead.count(dead[0]) == len(dead), dead  # a copy of the one entry, not a second outcome
    assert scenario.reason in dead[0]["reason"]


# --- runs --------------------------------------------------------------------------


def record(world: World, scenario: Scenario) -> list[Call]:
    """The scenario without a crash: its calls, once its outcome is checked."""
    scenario.start(world)
    world.plan = Plan()
    run_until_settled(world, world.controller(world.plan))
    check_outcome(world, scenario, twice=False)
    return world.plan.calls


def crash_and_take_over(world: World, scenario: Scenario, operations: list[str], point: CrashPoint) -> None:
    scenario.start(world)
    killed(world, point, operations)
    world.check_one_job_runs()
    if point.jobs_first:
        world.let_jobs_end()
    world.wait_messages_back()
    run_until_settled(world, world.controller())
    check_outcome(world, scenario, sent_twice(world.plan.calls))


def killed(world: World, point: CrashPoint, operations: list[str]) -> None:
    """Run a controller until it dies at ``point``, having made the first ``operations``."""
    world.plan = plan = Plan(at=point.at, after=point.after)
    with pytest.raises(Killed):
        run_until_settled(world, world.controller(plan))
    # A point stands for the recorded run only if the run it cut short went the same way.
    assert [call.operation for call in plan.calls] == operations[:len(plan.calls)]


def sweep(new_world, scenario: Scenario, trace: list[Call]) -> list[str]:
    """Every crash point of ``trace``, each in a world of its own, all at once; the failures."""
    def failure(point: CrashPoint) -> str | None:
        try:
            crash_and_take_over(new_world(scenario), scenario, [call.operation for call in trace], point)
        except (Exception, pytest.fail.Exception, Killed) as exc:
            return f"{point}: {type(exc).__name__}: {exc}"
        return None

    points = crash_points(trace)
    with ThreadPoolExecutor(max_workers=len(points)) as pool:
        return [f for f in pool.map(failure, points) if f]


# --- fixtures ----------------------------------------------------------------------


class SharedNode(LocalNode):
    """A local node for the namespaces of many runs at once, added as they are made: one
    list of pods a poll, however many namespaces there are."""

    def __init__(self, api_client, **kwargs):
        super().__init__(api_client, **kwargs)
        self.namespaces = set()

    def _pods(self) -> list:
        return [pod for pod in self.core.list_pod_for_all_namespaces(label_selector=jobs.SELECTOR).items
                if pod.metadata.namespace in self.namespaces]


@pytest.fixture(scope="module")
def node(kube, tmp_path_factory):
    with SharedNode(kube.api_client, name=unique_name("crashes"), logdir=tmp_path_factory.mktemp("pods")) as node:
        yield node


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    """A directory that, first on PYTHONPATH, makes ``python -m rates_ingest`` the stand-in."""
    root = tmp_path_factory.mktemp("stand-in")
    (root / "rates_ingest").mkdir()
    (root / "rates_ingest" / "__init__.py").write_text("")
    (root / "rates_ingest" / "__main__.py").write_text(STAND_IN)
    return root


@pytest.fixture
def new_world(kube, node, stand_in, moto_endpoint, tmp_path):
    """new_world(scenario) -> a World in a namespace of its own, deleted after the test."""
    logs.configure("INFO", component="controller-test")
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint)
    made = []

    def make(scenario: Scenario) -> World:
        namespace = unique_name("crash")
        kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        made.append(namespace)
        kube.core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=JOB_SERVICE_ACCOUNT)))
        node.namespaces.add(namespace)
        gates = tmp_path / namespace
        gates.mkdir()
        queues = new_queues(sqs)
        settings = settings_for(queues, namespace, moto_endpoint, max_attempts=scenario.max_attempts,
                                retry_delay_seconds=0, visibility_timeout=VISIBILITY, poll_wait_seconds=0,
                                job_backoff_limit=0, job_database_url="postgresql://stand-in@127.0.0.1/none",
                                job_env={"PYTHONPATH": str(stand_in), "STAND_IN_GATES": str(gates)})
        return World(kube, namespace, queues, gates, settings, scenario.exit_code)

    yield make
    for namespace in made:
        kube.core.delete_namespace(namespace)


# --- tests -------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_a_controller_killed_at_any_step_is_taken_over_by_a_new_one(scenario, new_world):
    trace = record(new_world(scenario), scenario)
    assert scenario.covers <= {call.operation for call in trace}, [call.operation for call in trace]

    failures = sweep(new_world, scenario, trace)

    assert not failures, "\n".join(failures)


def test_a_file_sent_back_whose_message_comes_back_after_its_new_round_ended_gets_no_third_round(new_world):
    # Found by the sweep: the controller died after creating the round's first Job and
    # before deleting the message; the round was set aside again before the message came
    # back, and its second delivery began a third round (one redrive, two set-asides).
    world = new_world(REDRIVEN)
    set_aside_and_sent_back(world)
    calls = ["kube.unhandled", "uploads.receive", "kube.create", "kube.get", "kube.create"]
    killed(world, CrashPoint(len(calls), after=True, operation="kube.create"), calls)
    world.let_jobs_end()
    world.wait_messages_back()

    run_until_settled(world, world.controller())

    check_outcome(world, REDRIVEN, twice=False)


def test_a_file_set_aside_twice_by_a_crash_and_sent_back_twice_gets_one_new_round(new_world):
    # The accepted duplicate: died between sending the file to the dead-letter queue and
    # labelling its Job, so the entry is there twice. The operator sends back one copy and,
    # once that round is set aside too, the other: that one is the same redrive again.
    world = new_world(REDRIVEN)
    upload(world)
    calls = ["kube.unhandled", "uploads.receive", "kube.create", "uploads.delete", "kube.unhandled",
             "kube.termination_message", "dead.send"]
    killed(world, CrashPoint(len(calls), after=True, operation="dead.send"), calls)
    run_until_settled(world, world.controller())
    first, second = world.queues.dead_letters()
    assert first == second

    for copy in (first, second):
        world.queues.send(copy["body"])
        run_until_settled(world, world.controller())

    second_round = world.jobs()[-1].metadata.name
    assert [j.metadata.labels[jobs.HANDLED] for j in world.jobs()] == ["set-aside", "set-aside"]
    assert [dead["job"] for dead in world.queues.dead_letters()] == [second_round]
