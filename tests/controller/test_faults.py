"""Each call to the API server and SQS failing once, and the same controller carrying on.

A call can fail before it reaches its server (refused, unreachable), or after the server
acted on it and before the answer came back (a timeout, a connection cut): the controller
sees the same TemporaryError either way, but the world differs. Each scenario runs once
cleanly, recording its calls; then, for each call of that run, a controller whose call of
that number fails, before or after it took effect, runs until nothing is left to do. The
invariants are the crash sweep's (test_crashes.py):

* the file ends in one outcome, with its dead-letter entry once - twice, the same entry,
  only where the failed call was that send and it had taken effect, or it was the poison
  message's delete that failed, so that the message came back (the send is at least once);
* the file gets the Jobs it would have got, and never two of its Jobs run at once;
* every message is deleted in the end, every Job is handled.

Unlike the crash sweep, the controller keeps its memory, and a failure it meets in a
message (a Job create) sends the message back with a backoff, shortened here to 1 s. Each
fault must fire at the call it names, or the run went another way and tested nothing.
Besides the shared scenarios, two files in one batch (a failed create holds the other
back), and the calls made only after a failure (hiding a message for its backoff),
failing in turn.
"""

from concurrent.futures import ThreadPoolExecutor
import math
from dataclasses import dataclass, field, replace

import pytest

from rates_controller import controller as controller_module
from rates_controller import jobs
from rates_controller.kube import Unreachable
from rates_core.errors import TemporaryError
from tests.controller.conftest import sample
from tests.controller.worlds import (ROUND, SCENARIOS, Intercepted, Scenario, World, changes, check_outcome,
                                     run_until_settled, s3_event, upload)

pytestmark = pytest.mark.kube


@dataclass
class Fault:
    at: int | None  # the call that fails, counted from 1; None: none does
    after: bool  # once it took effect, or before it
    operation: str = ""
    fired: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"call {self.at} ({self.operation}) failed {'after' if self.after else 'before'} taking effect"


class Failing(Intercepted):
    """Calls go through to the real client, and the faults' calls fail; each call is
    recorded in ``calls`` as (operation, whether it changed anything)."""

    def __init__(self, real, role: str, faults: tuple[Fault, ...], calls: list[tuple[str, bool]]):
        super().__init__(real, role)
        self._faults, self._calls = {fault.at: fault for fault in faults}, calls

    def _call(self, operation: str, method, *args):
        number = len(self._calls) + 1
        fault = self._faults.get(number)
        if fault and not fault.after:
            self._calls.append((operation, False))
            raise _fired(fault, operation, "connection refused")
        result = method(*args)
        self._calls.append((operation, changes(operation, args, result)))
        if fault:
            raise _fired(fault, operation, "read timed out (it took effect)")
        return result


def _fired(fault: Fault, operation: str, what: str) -> TemporaryError:
    # Where the run went another way than the recorded one, the fault would test nothing.
    assert operation == fault.operation, f"call {fault.at} is {operation}, not {fault}"
    fault.fired.append(operation)
    # A refused connection and a timeout are what the Kubernetes boundary calls Unreachable.
    return (Unreachable if operation.startswith("kube.") else TemporaryError)(f"{operation}: {what}")


class Looping:
    """A controller's step as its run loop makes it: a pass that fails is tried again."""

    def __init__(self, controller):
        self._controller = controller

    def step(self) -> None:
        try:
            self._controller.step()
        except TemporaryError:
            pass


def run(world: World, scenario: Scenario, *faults: Fault) -> list[tuple[str, bool]]:
    """The scenario with ``faults``, until settled; the controller's calls."""
    calls: list[tuple[str, bool]] = []
    scenario.start(world)
    controller = world.controller(lambda real, role: Failing(real, role, faults, calls))
    run_until_settled(world, Looping(controller))
    return calls


def copies(scenario: Scenario, fault: Fault) -> int:
    """The dead-letter entries the scenario makes with ``fault`` (see the module's docstring)."""
    if fault.operation == "dead.send" and fault.after:
        return 2
    if scenario.name == "poison" and fault.operation == "uploads.delete" and not fault.after:
        return 2
    return 1


def sweep(new_world, scenario: Scenario, trace: list[tuple[str, bool]]) -> list[str]:
    """A fault at each call of ``trace``, each in a world of its own, all at once; the
    failures. Failing after a call that changed nothing (a read, an empty receive) is
    failing before it, so only such calls that changed something fail both ways."""
    def failure(fault: Fault) -> str | None:
        try:
            world = new_world(scenario)
            calls = run(world, scenario, fault)
            assert fault.fired == [fault.operation], "the fault never fired"
            check_outcome(world, scenario, copies(scenario, fault))
            if scenario is TWO_FILES:
                check_both_files(world, fault, calls)
        except (Exception, pytest.fail.Exception) as exc:
            return f"{fault}: {type(exc).__name__}: {exc}"
        return None

    faults = [Fault(at, after, operation) for at, (operation, changed) in enumerate(trace, 1)
              for after in ((False, True) if changed else (False,))]
    with ThreadPoolExecutor(max_workers=len(faults)) as pool:
        return [f for f in pool.map(failure, faults) if f]


class CreateFails(Failing):
    """The ``nth`` Job create fails, after it took effect (its answer lost) or before."""

    def __init__(self, real, role: str, nth: int, after: bool, creates: list[str]):
        super().__init__(real, role, (), [])
        self._nth, self._after, self._creates = nth, after, creates

    def _call(self, operation: str, method, *args):
        if operation == "kube.create":
            self._creates.append(args[0]["metadata"]["name"])
            if len(self._creates) == self._nth:
                if self._after:
                    method(*args)
                raise TemporaryError(f"kube.create: {'read timed out' if self._after else 'connection refused'}")
        return super()._call(operation, method, *args)


@pytest.mark.parametrize("after", [True, False], ids=["took-effect", "did-not"])
def test_a_failed_create_on_the_last_delivery_is_checked_before_the_file_is_set_aside(after, new_world):
    """On its last delivery a message whose Job cannot be created is set aside: not when the
    create went through and only its answer was lost, as the Job then loads the file."""
    scenario = SCENARIOS[0]
    assert scenario.name == "loads"
    world = new_world(scenario, max_receives=1)
    scenario.start(world)
    creates: list[str] = []
    controller = world.controller(lambda real, role: CreateFails(real, role, 1, after, creates))
    run_until_settled(world, Looping(controller))
    dead = world.queues.dead_letters()
    if after:
        check_outcome(world, scenario, 1)
        assert dead == [] and [j.metadata.labels[jobs.HANDLED] for j in world.jobs()] == ["succeeded"]
        assert sample(controller.metrics, "rates_controller_jobs_created_total", attempt="first") == 1
    else:
        assert [d["reason"] for d in dead] == [
            "no Job could be created in 1 deliveries: kube.create: connection refused"] and world.jobs() == []
    assert len(creates) == 1


def test_a_failed_create_of_a_retry_after_the_give_up_time_is_checked_too(new_world, monkeypatch):
    # As if creates had failed for the whole hour already: the first failure gives up.
    monkeypatch.setattr(controller_module, "RETRY_CREATE_GIVE_UP", -controller_module.RETRY_CREATE_GIVE_UP)
    scenario = SCENARIOS[1]
    assert scenario.name == "keeps-failing" and scenario.max_attempts == 2
    world = new_world(scenario)
    scenario.start(world)
    creates: list[str] = []
    controller = world.controller(lambda real, role: CreateFails(real, role, 2, True, creates))  # the retry's
    run_until_settled(world, Looping(controller))
    [dead] = world.queues.dead_letters()
    assert dead["reason"].startswith("the file did not load in 2 Jobs"), dead
    assert sorted(j.metadata.labels[jobs.HANDLED] for j in world.jobs()) == ["retried", "set-aside"]


def two_uploads(world: World) -> None:
    """Two files in one batch: a failed create holds back the other message too."""
    world.queues.send(s3_event("2016/jan.csv"))
    world.queues.send(s3_event("2016/feb.csv"))


TWO_FILES = Scenario("two-files", two_uploads, ROUND, jobs=2)


def check_both_files(world: World, fault: Fault, calls: list[tuple[str, bool]]) -> None:
    """Each file loaded, once; and a failed first create held the other message back."""
    done = {job.metadata.annotations[jobs.KEY]: job.metadata.labels[jobs.HANDLED] for job in world.jobs()}
    assert done == {"2016/jan.csv": "succeeded", "2016/feb.csv": "succeeded"}, done
    operations = [operation for operation, _changed in calls]
    if fault.operation == "kube.create" and fault.at == operations.index("kube.create") + 1 and not fault.after:
        # the check that the Job was not made after all, then both messages back
        assert operations[fault.at:fault.at + 3] == ["kube.get"] + ["uploads.retry_later"] * 2, operations

@pytest.mark.parametrize("scenario", [*SCENARIOS, TWO_FILES], ids=lambda s: s.name)
def test_a_call_that_fails_once_changes_no_outcome(scenario, new_world, monkeypatch):
    monkeypatch.setattr(controller_module, "MESSAGE_BACKOFF_SECONDS", (1, 1))
    world = new_world(scenario)
    trace = run(world, scenario)
    check_outcome(world, scenario, copies=1)
    assert scenario.covers <= {operation for operation, _changed in trace}, trace

    failures = sweep(new_world, scenario, trace)

    assert not failures, "\n".join(failures)


def test_a_call_made_only_after_a_failure_may_fail_too(new_world, monkeypatch):
    # Checking whether the failed create made the Job after all, and hiding the message for
    # its backoff, happen only once its Job's create has failed, so the sweep above never
    # makes them fail: here the create fails first, then each call that only that failure
    # brings fails as well, before and after taking effect.
    monkeypatch.setattr(controller_module, "MESSAGE_BACKOFF_SECONDS", (1, 1))
    scenario = SCENARIOS[0]
    clean = run(new_world(scenario), scenario)
    create = Fault(next(at for at, (op, _) in enumerate(clean, 1) if op == "kube.create"), False, "kube.create")
    trace = run(new_world(scenario), scenario, create)
    extra = [(at, op) for at, (op, _changed) in enumerate(trace, 1) if op not in {op for op, _ in clean}]
    assert [op for _at, op in extra] == ["kube.get", "uploads.retry_later"], trace

    failures = []
    for at, operation in extra:
        for after in (False, True):
            first, second = replace(create, fired=[]), Fault(at, after, operation)
            world = new_world(scenario)
            run(world, scenario, first, second)
            assert (first.fired, second.fired) == (["kube.create"], [operation])
            try:
                check_outcome(world, scenario, copies=1)
            except AssertionError as exc:
                failures.append(f"{second}: {exc}")

    assert not failures, "\n".join(failures)


def test_an_unanswered_call_for_an_ended_job_leaves_the_other_ended_jobs_for_the_next_pass(new_world):
    # Against a hung API server each call waits its whole timeout: a pass that went on to
    # every ended Job outlasted the liveness probe's patience, and the probe's restart
    # loses what the controller holds in memory.
    world = new_world(TWO_FILES)
    clean = run(world, TWO_FILES)
    label = Fault(next(at for at, (op, _) in enumerate(clean, 1) if op == "kube.mark_handled"), False,
                  "kube.mark_handled")
    world = new_world(TWO_FILES)
    calls = run(world, TWO_FILES, label)

    operations = [operation for operation, _changed in calls]
    assert label.fired == ["kube.mark_handled"]
    assert operations[label.at] != "kube.mark_handled", operations  # the other Job waits
    assert operations.count("kube.mark_handled") == 3, operations  # both, in the next pass
    check_outcome(world, TWO_FILES, copies=1)
    check_both_files(world, label, calls)


class Recording(Intercepted):
    def __init__(self, real, role: str, calls: list[str], on_call=lambda operation: None):
        super().__init__(real, role)
        self._calls, self._on_call = calls, on_call

    def _call(self, operation: str, method, *args):
        self._calls.append(operation)
        self._on_call(operation)
        return method(*args)


def test_a_stop_asked_for_during_the_pass_over_ended_jobs_takes_no_new_message(new_world):
    # A batch taken after SIGTERM may be cut off by the kill at the end of the grace period,
    # and stay hidden for its visibility timeout, each message's delivery counted.
    world = new_world(SCENARIOS[0], visibility_timeout=60)
    upload(world)
    calls: list[str] = []
    stopping = []

    def stop_while_listing(operation: str) -> None:
        if operation == "kube.unhandled":
            stopping[0].set()

    controller = world.controller(lambda real, role: Recording(real, role, calls, stop_while_listing))
    stopping.append(controller.stopping)

    controller.step()

    assert calls == ["kube.unhandled"]
    assert world.queues.counts() == (1, 0)  # still there for the next pod, not in flight
    assert world.jobs() == []


def test_what_runs_is_unknown_while_the_jobs_cannot_be_listed(new_world):
    # The figures of the last pass that listed them would keep an at-capacity alert going
    # through an outage (or show an idle controller) whatever has ended or started since.
    world = new_world(SCENARIOS[0])
    upload(world)
    down = []

    def outage(operation: str) -> None:
        if down and operation.startswith("kube."):
            raise Unreachable(f"{operation}: connection refused")

    controller = world.controller(lambda real, role: Recording(real, role, [], outage))
    controller.step()
    controller.step()  # its Job runs
    registry = controller.metrics.registry
    assert registry.get_sample_value("rates_controller_active_jobs") == 1
    assert registry.get_sample_value("rates_controller_slots_in_use") == 1

    down.append(True)
    with pytest.raises(TemporaryError):
        controller.step()

    assert math.isnan(registry.get_sample_value("rates_controller_active_jobs"))
    assert math.isnan(registry.get_sample_value("rates_controller_slots_in_use"))
    down.clear()
    controller.step()
    assert registry.get_sample_value("rates_controller_active_jobs") == 1
