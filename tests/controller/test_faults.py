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
from tests.controller.worlds import (SCENARIOS, Intercepted, Scenario, World, changes, check_outcome,
                                     run_until_settled)

pytestmark = pytest.mark.kube


@dataclass(frozen=True)
class Fault:
    at: int | None  # the call that fails, counted from 1; None: none does
    after: bool  # once it took effect, or before it
    operation: str = ""

    def __str__(self) -> str:
        return f"call {self.at} ({self.operation}) failed {'after' if self.after else 'before'} taking effect"


class Failing(Intercepted):
    """Calls go through to the real client, and the fault's call fails; each call is
    recorded in ``calls`` as (operation, whether it changed anything)."""

    def __init__(self, real, role: str, fault: Fault, calls: list[tuple[str, bool]]):
        super().__init__(real, role)
        self._fault, self._calls = fault, calls

    def _call(self, operation: str, method, *args):
        number = len(self._calls) + 1
        if number == self._fault.at and not self._fault.after:
            self._calls.append((operation, False))
            raise TemporaryError(f"{operation}: connection refused")
        result = method(*args)
        self._calls.append((operation, changes(operation, args, result)))
        if number == self._fault.at:
            raise TemporaryError(f"{operation}: read timed out (it took effect)")
        return result


class Looping:
    """A controller's step as its run loop makes it: a pass that fails is tried again."""

    def __init__(self, controller):
        self._controller = controller

    def step(self) -> None:
        try:
            self._controller.step()
        except TemporaryError:
            pass


def run(world: World, scenario: Scenario, fault: Fault) -> list[tuple[str, bool]]:
    """The scenario with ``fault``, until settled; the controller's calls."""
    calls: list[tuple[str, bool]] = []
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


def sweep(new_world, scenario: Scenario, trace: list[tuple[str, bool]]) -> list[str]:
    """A fault at each call of ``trace``, each in a world of its own, all at once; the
    failures. Failing after a call that changed nothing (a read, an empty receive) is
    failing before it, so only such calls that changed something fail both ways."""
    def failure(fault: Fault) -> str | None:
        try:
            world = new_world(scenario)
            run(world, scenario, fault)
            check_outcome(world, scenario, copies(scenario, fault))
        except (Exception, pytest.fail.Exception) as exc:
            return f"{fault}: {type(exc).__name__}: {exc}"
        return None

    faults = [Fault(at, after, operation) for at, (operation, changed) in enumerate(trace, 1)
              for after in ((False, True) if changed else (False,))]
    with ThreadPoolExecutor(max_workers=len(faults)) as pool:
        return [f for f in pool.map(failure, faults) if f]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_a_call_that_fails_once_changes_no_outcome(scenario, new_world, monkeypatch):
    monkeypatch.setattr(controller_module, "MESSAGE_BACKOFF_SECONDS", (1, 1))
    world = new_world(scenario)
    trace = run(world, scenario, Fault(None, after=False))
    check_outcome(world, scenario, copies=1)
    assert scenario.covers <= {operation for operation, _changed in trace}, trace

    failures = sweep(new_world, scenario, trace)

    assert not failures, "\n".join(failures)
