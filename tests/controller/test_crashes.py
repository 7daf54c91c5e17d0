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

The worlds, their stand-in Jobs and the scenarios are worlds.py's.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import pytest

from rates_controller import jobs
from tests.controller.worlds import (REDRIVEN, SCENARIOS, Intercepted, Scenario, World, changes, check_outcome,
                                     run_until_settled, set_aside_and_sent_back, upload)

pytestmark = pytest.mark.kube


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
        self.calls.append(Call(operation, changes(operation, args, result),
                               bool(self.in_flight and self.running)))


class Dying(Intercepted):
    """Calls go through to the real client, and the process dies at the plan's call."""

    def __init__(self, real, role: str, plan: Plan):
        super().__init__(real, role)
        self._plan = plan

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


# --- runs --------------------------------------------------------------------------


def record(world: World, scenario: Scenario) -> list[Call]:
    """The scenario without a crash: its calls, once its outcome is checked."""
    scenario.start(world)
    plan = Plan()
    run_until_settled(world, dying(world, plan))
    check_outcome(world, scenario, copies=1)
    return plan.calls


def crash_and_take_over(world: World, scenario: Scenario, operations: list[str], point: CrashPoint) -> None:
    scenario.start(world)
    plan = killed(world, point, operations)
    world.check_one_job_runs()
    if point.jobs_first:
        world.let_jobs_end()
    world.wait_messages_back()
    run_until_settled(world, world.controller())
    check_outcome(world, scenario, copies=2 if sent_twice(plan.calls) else 1)


def dying(world: World, plan: Plan):
    """A controller that dies where ``plan`` says; the Jobs it made stop running when the
    world's Jobs end."""
    world.on_jobs_end.append(plan.running.clear)
    return world.controller(lambda real, role: Dying(real, role, plan))


def killed(world: World, point: CrashPoint, operations: list[str]) -> Plan:
    """Run a controller until it dies at ``point``, having made the first ``operations``."""
    plan = Plan(at=point.at, after=point.after)
    with pytest.raises(Killed):
        run_until_settled(world, dying(world, plan))
    # A point stands for the recorded run only if the run it cut short went the same way.
    assert [call.operation for call in plan.calls] == operations[:len(plan.calls)]
    return plan


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

    check_outcome(world, REDRIVEN, copies=1)


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
