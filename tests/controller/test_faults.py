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
message (a Job create) sends the message back with a backoff, shortened here to 1 s.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from rates_controller import controller as controller_module
from rates_core.errors import TemporaryError
from tests.controller.worlds import SCENARIOS, Intercepted, Scenario, World, check_outcome, run_until_settled

pytestmark = pytest.mark.kube


# Calls that change nothing: failing after them is failing before them.
READS = frozenset({"kube.unhandled", "kube.get", "kube.termination_message"})


@dataclass(frozen=True)
class Fault:
    at: int | None  # the call that fails, counted from 1; None: none does
    after: bool  # once it took effect, or before it
    operation: str = ""

    def __str__(self) -> str:
        return f"call {self.at} ({self.operation}) failed {'after' if self.after else 'before'} taking effect"


class Failing(Intercepted):
    """Calls go through to the real client, and the fault's call fails; the operations
    are recorded in ``calls``."""

    def __init__(self, real, role: str, fault: Fault, calls: list[str]):
        super().__init__(real, role)
        self._fault, self._calls = fault, calls

    def _call(self, operation: str, method, *args):
        self._calls.append(operation)
        if len(self._calls) != self._fault.at:
            return method(*args)
        if self._fault.after:
            method(*args)
            raise TemporaryError(f"{operation}: read timed out (it took effect)")
        raise TemporaryError(f"{operation}: connection refused")


class Looping:
    """A controller's step as its run loop makes it: a pass that fails is tried again."""

    def __init__(self, controller):
        self._controller = controller

    def step(self) -> None:
        try:
            self._controller.step()
        except TemporaryError:
            pass


def run(world: World, scenario: Scenario, fault: Fault) -> list[str]:
    """The scenario with ``fault``, until settled; the operations the controller called."""
    calls: list[str] = []
    scenario.start(world)
    controller = world.controller(lambda real, role: Failing(real, role, fault, calls))
    run_until_settled(world, Looping(controller))
    return calls


def copies(scenario: Scenario, fault: Fault) -> int:
    """The dead-letter entries the scenario makes with ``fault`` (see the module's docstring)."""
    if fault.operation == "dead.send" and fault.after:
        return 2
    if scenario.name == "poison" and fault.operation == "uploads.delete" and not fault.after:
        return 2
    return 1


def sweep(new_world, scenario: Scenario, trace: list[str]) -> list[str]:
    """A fault at each call of ``trace``, before and after, each in a world of its own,
    all at once; the failures."""
    def failure(fault: Fault) -> str | None:
        try:
            world = new_world(scenario)
            run(world, scenario, fault)
            check_outcome(world, scenario, copies(scenario, fault))
        except (Exception, pytest.fail.Exception) as exc:
            return f"{fault}: {type(exc).__name__}: {exc}"
        return None

    faults = [Fault(at, after, operation) for at, operation in enumerate(trace, 1)
              for after in ((False,) if operation in READS else (False, True))]
    with ThreadPoolExecutor(max_workers=len(faults)) as pool:
        return [f for f in pool.map(failure, faults) if f]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_a_call_that_fails_once_changes_no_outcome(scenario, new_world, monkeypatch):
    monkeypatch.setattr(controller_module, "MESSAGE_BACKOFF_SECONDS", (1, 1))
    world = new_world(scenario)
    trace = run(world, scenario, Fault(None, after=False))
    check_outcome(world, scenario, copies=1)
    assert scenario.covers <= set(trace), trace

    failures = sweep(new_world, scenario, trace)

    assert not failures, "\n".join(failures)
