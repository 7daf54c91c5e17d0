"""Two controllers at once, as two pods would be: a partitioned node's old pod still
running beside its replacement, or the Deployment scaled to 2. Two Controller objects,
same settings, same queues and namespace, act on the same uploads.

Each controller runs its passes in a thread of its own, and its clients are wrapped so
that it waits before each call to the API server or SQS until the schedule lets it go:
one call at a time, in an order the test chooses, so that a failure names its
interleaving and replays it. A round is one pass of each; between rounds time passes
(the messages in flight come back, else the running Jobs end), as in test_crashes.py.
SQS hands the same message to both only once its visibility timeout has run out: the
clock would make that a race, so the timeout is long and the schedule ends it where it
chooses, by setting the message's visibility to 0 (what SQS does when it runs out).

Each scenario of worlds.py runs once with A's pass before B's, recording A's calls; then
under every schedule of the sweep, each in a world of its own: in every round A makes its
first k calls, B all of its, then A the rest (for each k that cuts one of A's passes),
with A's messages coming back just before B receives (for each k where A holds one
then); and seeded random interleavings. The poison message's scenario is small enough
for every interleaving (about a hundred). A and B are alike (same settings, and neither
remembers more than the other), so B cut by A would add nothing. Checked once both are done:

* the file ends in one outcome: its Job succeeded, or the dead-letter queue has its entry
  with the reason, once per controller that sent it (each sends it at most once: the
  send comes before the label, at least once, and both may act on the Job, or hold the
  poison message, before either has noted it), so at most twice, the same entry;
* the file gets the Jobs it would get with one controller, no round more than
  MAX_ATTEMPTS, no failed Job more than one retry, and never two of its Jobs run at once;
* every message is deleted, every ended Job is labelled, by exactly one controller, with
  what was done (succeeded, retried, set-aside);
* the metrics of both, added up as Prometheus would: Jobs created and Jobs finished are
  counted once each, and so are the messages that made a Job (the other controller's
  delivery of such a message counts as a duplicate); files set aside once per
  dead-letter entry, as the queue's depth shows them; no error is counted.

The sweep must meet each race it is for (MEETS), or it tests less than it says. moto
deletes a message by any receipt it was given; SQS may ignore all but the newest, which
is the one the controller holding it then deletes it with, in the same pass.
"""

import random
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from rates_controller import jobs
from rates_core.errors import TemporaryError
from tests.controller.conftest import sample
from tests.controller.worlds import (MAX_PASSES, SCENARIOS, Intercepted, Scenario, World, check_outcome,
                                     s3_event)

pytestmark = pytest.mark.kube

# Long enough that no message comes back by the clock during a run: only the schedule ends it.
VISIBILITY = 600
# A controller that has not reached its next call by then is stuck, not slow.
STUCK_AFTER = 120
SEEDS = range(4)
# Where every interleaving is tried: the poison message's scenario has about a hundred.
MAX_INTERLEAVINGS = 300

RUNNING, WAITING, GO, DONE = "running", "waiting", "go", "done"


class Aborted(BaseException):
    """The run failed: a controller still waiting for its turn gives up (not an
    Exception, which the controller would catch)."""


@dataclass(frozen=True)
class Call:
    actor: str
    operation: str
    what: tuple[str, ...]  # the Jobs or messages it was about
    outcome: str = ""  # what came of it, or the error it raised
    round: int = 0
    failed: bool = False

    def __str__(self) -> str:
        # A message id's first part is enough to tell a world's one or two messages apart.
        what = ", ".join(w[:8] if w.count("-") == 4 else w for w in self.what)
        return f"{self.round}: {self.actor} {self.operation}({what})" + (f" -> {self.outcome}" if self.outcome else "")


@dataclass(frozen=True)
class Option:
    actor: "Actor"
    operation: str
    expire: bool = False  # the other controller's messages come back first


class Actor:
    """One controller (one pod); each of its calls waits for its turn."""

    def __init__(self, name: str, world: World, turns: "Turns"):
        self.name, self.turns = name, turns
        self.controller = world.controller(lambda real, role: Paced(real, role, self))
        self.state = DONE
        self.next_call: str | None = None
        self.calls = 0  # in this round
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start_pass(self) -> None:
        self.state, self.calls = RUNNING, 0
        self._thread = threading.Thread(target=self._pass, name=f"controller {self.name}", daemon=True)
        self._thread.start()

    def _pass(self) -> None:
        try:
            self.controller.step()
        except TemporaryError:
            pass  # as Controller.run: the next pass tries again
        except BaseException as exc:  # noqa: BLE001 - the driver raises it
            self.error = exc
        finally:
            with self.turns.cond:
                self.state = DONE
                self.turns.cond.notify_all()

    def wait_turn(self, operation: str) -> None:
        with self.turns.cond:
            self.state, self.next_call = WAITING, operation
            self.turns.cond.notify_all()
            self.turns.cond.wait_for(lambda: self.state == GO or self.turns.aborted)
            if self.turns.aborted:
                raise Aborted()
            self.state, self.next_call = RUNNING, None
            self.calls += 1

    def join(self) -> None:
        if self._thread:
            self._thread.join(timeout=STUCK_AFTER)


class Paced(Intercepted):
    """Each call waits for its turn, goes through to the real client, and is written down."""

    def __init__(self, real, role: str, actor: Actor):
        super().__init__(real, role)
        self._actor = actor

    def _call(self, operation: str, method, *args):
        self._actor.wait_turn(operation)
        try:
            result = method(*args)
        except Exception as exc:
            self._actor.turns.note(self._actor, operation, args, error=exc)
            raise
        self._actor.turns.note(self._actor, operation, args, result=result)
        return result


class Turns:
    """Two controllers in one world, one call at a time, in the order ``schedule`` chooses;
    what each call was about and came to, in that order, is ``history``."""

    def __init__(self, world: World, schedule):
        self.world, self.schedule = world, schedule
        self.cond = threading.Condition()
        self.aborted = False
        self.history: list[Call] = []
        self.round = 0
        # Received and neither deleted nor come back since: message id -> (actor, receipt).
        self.held: dict[str, tuple[str, str]] = {}
        self.a, self.b = Actor("A", world, self), Actor("B", world, self)
        self.actors = (self.a, self.b)

    def run(self) -> None:
        """Rounds until nothing is left to do."""
        try:
            for _ in range(MAX_PASSES):
                self.run_round()
                # Jobs end only between rounds, so none has ended since a create of this round.
                self.world.check_one_job_runs()
                if self.world.settled():
                    return
                self.time_passes()
        finally:
            self.abort()
        labels = [(j.metadata.name, j.metadata.labels.get(jobs.HANDLED)) for j in self.world.jobs()]
        raise AssertionError(f"not settled after {MAX_PASSES} rounds: queue (visible, in flight) "
                             f"{self.world.queues.counts()}, Jobs and what was done with them {labels}")

    def run_round(self) -> None:
        self.round += 1
        for actor in self.actors:
            actor.start_pass()
        while (option := self._next()) is not None:
            if option.expire:
                self.expire(self.other(option.actor))
            with self.cond:
                option.actor.state = GO
                self.cond.notify_all()
        for actor in self.actors:
            actor.join()
            if actor.error:
                raise actor.error

    def _next(self) -> Option | None:
        """Once neither controller is between calls, the schedule's choice among the calls
        they wait to make (None once both passes are done)."""
        with self.cond:
            if not self.cond.wait_for(lambda: all(a.state in (WAITING, DONE) for a in self.actors),
                                      timeout=STUCK_AFTER):
                raise AssertionError(f"a controller did not reach its next call in {STUCK_AFTER} s")
            options = []
            for actor in self.actors:
                if actor.state == WAITING:
                    options.append(Option(actor, actor.next_call))
                    if actor.next_call == "uploads.receive" and self.holding(self.other(actor)):
                        options.append(Option(actor, actor.next_call, expire=True))
        return self.schedule.choose(options, self) if options else None

    def other(self, actor: Actor) -> Actor:
        return self.b if actor is self.a else self.a

    def holding(self, actor: Actor) -> dict[str, str]:
        return {message: receipt for message, (name, receipt) in self.held.items() if name == actor.name}

    def expire(self, actor: Actor) -> None:
        """The visibility timeout of the messages ``actor`` holds runs out: SQS hands them out again."""
        held = self.holding(actor)
        for message, receipt in held.items():
            self.world.queues.client.change_message_visibility(
                QueueUrl=self.world.queues.uploads_url, ReceiptHandle=receipt, VisibilityTimeout=0)
            del self.held[message]
        self.history.append(Call(actor.name, "visibility ran out", tuple(held), round=self.round))

    def time_passes(self) -> None:
        """Between rounds: the messages still held come back, else the running Jobs end
        (one at a time, so that a Job never ends while a message that made it is held)."""
        holders = [actor for actor in self.actors if self.holding(actor)]
        for actor in holders:
            self.expire(actor)
        if not holders and self.world.running():
            self.world.let_jobs_end()
            self.history.append(Call("-", "Jobs ended", (), round=self.round))

    def abort(self) -> None:
        with self.cond:
            self.aborted = True
            self.cond.notify_all()

    def note(self, actor: Actor, operation: str, args: tuple, result=None, error: Exception | None = None) -> None:
        what, outcome = described(operation, args, result)
        with self.cond:
            self.history.append(Call(actor.name, operation, what, type(error).__name__ if error else outcome,
                                     round=self.round, failed=error is not None))
            if error:
                return
            if operation == "uploads.receive":
                self.held |= {m.id: (actor.name, m.receipt) for m in result}
            elif operation == "uploads.delete":
                for message in args[0]:
                    self.held.pop(message.id, None)


def described(operation: str, args: tuple, result) -> tuple[tuple[str, ...], str]:
    """What a call was about (Job names, message ids), and what came of it."""
    if operation == "kube.unhandled":
        ended = tuple(j.metadata.name for j in result if jobs.finished(j))
        return ended, "ended, unlabelled" if ended else ""
    if operation == "kube.create":
        retry = "retry " if jobs.PREVIOUS in args[0]["metadata"]["annotations"] else ""
        return (args[0]["metadata"]["name"],), retry + ("created" if result else "exists (409)")
    if operation == "kube.get":
        return (args[0],), "gone" if result is None else (result.metadata.labels or {}).get(jobs.HANDLED, "unlabelled")
    if operation in ("kube.mark_handled", "kube.termination_message"):
        return (args[0],), args[1] if operation == "kube.mark_handled" else ""
    if operation == "uploads.receive":
        return tuple(m.id for m in result), ""
    if operation == "uploads.delete":
        return tuple(m.id for m in args[0]), ""
    if operation == "uploads.retry_later":
        return (args[0].id,), ""
    attributes = args[1]  # dead.send
    return (attributes.get("job") or attributes.get("message-id"),), ""


# --- schedules ---------------------------------------------------------------------


@dataclass(frozen=True)
class Preempted:
    """In every round, A makes its first ``k`` calls, then B all of its, then A the rest;
    with ``expire``, the messages A holds come back just before B receives."""

    k: int
    expire: bool = False

    def choose(self, options: list[Option], turns: Turns) -> Option:
        a = [o for o in options if o.actor is turns.a]
        b = [o for o in options if o.actor is turns.b]
        if a and (turns.a.calls < self.k or not b):
            return a[0]
        return next((o for o in b if o.expire == self.expire), b[0])

    def __str__(self) -> str:
        return f"A's first {self.k} call(s) of each round, then B's pass" + (
            ", A's messages coming back just before B receives" if self.expire else "") + ", then A's rest"


SEQUENTIAL = Preempted(k=10 ** 6)


@dataclass
class Shuffled:
    """At each call, A or B at random, and the other's messages coming back or not."""

    seed: int
    rng: random.Random = field(init=False)

    def __post_init__(self):
        self.rng = random.Random(self.seed)

    def choose(self, options: list[Option], turns: Turns) -> Option:
        return self.rng.choice(options)

    def __str__(self) -> str:
        return f"random interleaving, seed {self.seed}"


@dataclass
class Replayed:
    """The choices ``taken`` at the first decisions, the first option at the next; what
    each decision offered is kept, so that the runs taking the others can follow."""

    taken: tuple[int, ...]
    choices: list[int] = field(default_factory=list)
    offered: list[int] = field(default_factory=list)

    def choose(self, options: list[Option], turns: Turns) -> Option:
        decision = len(self.choices)
        self.choices.append(self.taken[decision] if decision < len(self.taken) else 0)
        self.offered.append(len(options))
        return options[self.choices[-1]]

    def others(self) -> list["Replayed"]:
        """The schedules that first part from this one at a decision it did not inherit:
        from the empty one, by following each's others, every schedule once."""
        return [Replayed(tuple(self.choices[:decision]) + (other,))
                for decision in range(len(self.taken), len(self.offered))
                for other in range(1, self.offered[decision])]

    def __str__(self) -> str:
        return f"choices {self.choices} (at each call: A, A with B's messages back, B, B with A's, as offered)"


def schedules_after(record: list[Call]) -> list:
    """Cut each of A's recorded passes at each call, with and, where A holds a message
    there, without its messages coming back; and random interleavings."""
    passes = defaultdict(list)
    for call in record:
        if call.actor == "A" and call.operation.startswith(("kube.", "uploads.", "dead.")):
            passes[call.round].append(call)
    cuts = range(1, max(len(calls) for calls in passes.values()))
    holding = {k for calls in passes.values() for k in cuts if held_after(calls[:k])}
    return ([Preempted(k) for k in cuts] + [Preempted(k, expire=True) for k in sorted(holding)]
            + [Shuffled(seed) for seed in SEEDS])


def held_after(calls: list[Call]) -> bool:
    received = {m for c in calls if c.operation == "uploads.receive" for m in c.what}
    return bool(received - {m for c in calls if c.operation == "uploads.delete" for m in c.what})


# --- what must hold ----------------------------------------------------------------


def check(world: World, scenario: Scenario, turns: Turns, before: set[str]) -> None:
    """The invariants of the module's docstring, once both are done; ``before``: the
    Jobs the scenario made before the two controllers started."""
    done = [call for call in turns.history if not call.failed]
    sends = [call for call in done if call.operation == "dead.send"]
    assert max(Counter(call.actor for call in sends).values(), default=0) <= 1, "a controller sent twice"
    check_outcome(world, scenario, copies=len(sends))
    found = world.jobs()
    made = [job for job in found if job.metadata.name not in before]
    labels = check_jobs(found, made, done)
    check_metrics(turns, made, labels, len(sends))


def check_jobs(found: list, made: list, done: list[Call]) -> Counter:
    """Each Job made once, each failed Job retried at most once, each Job labelled once
    with what was done; the labels, counted."""
    retried = Counter(job.metadata.annotations.get(jobs.PREVIOUS) for job in found)
    retried.pop(None, None)
    assert max(retried.values(), default=0) <= 1, f"a failed Job retried twice: {retried}"
    names = Counter(job.metadata.name for job in made)
    created = Counter(c.what[0] for c in done if c.operation == "kube.create" and c.outcome.endswith("created"))
    assert created == names, "each Job created once, by one controller: the other's create gets 409"
    labelled = [c for c in done if c.operation == "kube.mark_handled"]
    assert Counter(c.what[0] for c in labelled) == names, "each Job labelled by exactly one controller"
    for job in made:
        ended = jobs.finished(job)
        expected = "succeeded" if ended.succeeded else "retried" if ended.uid in retried else "set-aside"
        assert job.metadata.labels[jobs.HANDLED] == expected, job.metadata.name
    return Counter(c.outcome for c in labelled)


def check_metrics(turns: Turns, made: list, labels: Counter, sends: int) -> None:
    """Both controllers' metrics added up, as a sum() over the two pods' series would be."""
    def total(name: str, **labels) -> float:
        return sum(sample(actor.controller.metrics, name, **labels) for actor in turns.actors)

    firsts = sum(job.metadata.annotations[jobs.ROUND_JOB] == "1" for job in made)
    assert total("rates_controller_jobs_created_total", attempt="first") == firsts, "first Jobs created"
    assert total("rates_controller_jobs_created_total", attempt="retry") == len(made) - firsts, "retries created"
    assert total("rates_controller_messages_total", outcome="jobs_created") == firsts, "messages that made a Job"
    for result in ("succeeded", "retried", "set-aside"):
        assert total("rates_controller_jobs_finished_total", result=result) == labels[result], f"Jobs {result}"
    assert sum(counted(actor, "rates_controller_files_set_aside_total") for actor in turns.actors) == sends
    assert sum(counted(actor, "rates_controller_errors_total") for actor in turns.actors) == 0, "errors"


def counted(actor: Actor, name: str) -> float:
    """A counter's samples, whatever their labels."""
    return sum(s.value for m in actor.controller.metrics.registry.collect() for s in m.samples if s.name == name)


# What both controllers may do to one message or Job, by the call that does it.
RACES = {"both held one message": "uploads.receive", "both created one Job": "kube.create",
         "both acted on one ended Job": "kube.mark_handled", "both set one file aside": "dead.send"}
MESSAGE = {"both held one message", "both set one file aside"}
JOB = {"both held one message", "both created one Job", "both acted on one ended Job", "a label lost (409)"}
# The races each scenario's sweep must meet, or it tests less than it says.
MEETS = {"loads": JOB, "keeps-failing": JOB | MESSAGE | {"a retry created twice"},
         "invalid": JOB | MESSAGE, "poison": MESSAGE, "redriven": JOB | MESSAGE}


def races(turns: Turns) -> set[str]:
    """Which of the races the sweep is for this run met."""
    actors = defaultdict(set)
    for call in turns.history:
        for what in call.what:
            actors[call.operation, what].add(call.actor)
    both = {operation for (operation, _), who in actors.items() if len(who) == 2}
    met = {race for race, operation in RACES.items() if operation in both}
    if any(call.outcome == "retry exists (409)" for call in turns.history):
        met.add("a retry created twice")
    if any(call.operation == "kube.mark_handled" and call.outcome == "Conflict" for call in turns.history):
        met.add("a label lost (409)")
    return met


# --- runs --------------------------------------------------------------------------


class RunFailed(Exception):
    def __init__(self, schedule, history: list[Call], error: BaseException):
        lines = "\n".join(f"    {call}" for call in history)
        super().__init__(f"{schedule}: {type(error).__name__}: {error}\n  the interleaving:\n{lines}")


def together(world: World, scenario: Scenario, schedule) -> Turns:
    """The scenario, acted on by two controllers in the order ``schedule`` chooses; checked."""
    scenario.start(world)
    before = {job.metadata.name for job in world.jobs()}
    turns = Turns(world, schedule)
    try:
        turns.run()
        check(world, scenario, turns, before)
    except (Exception, pytest.fail.Exception) as exc:
        raise RunFailed(schedule, turns.history, exc) from exc
    return turns


def sweep(new_world, scenario: Scenario) -> tuple[list[str], set[str]]:
    """The schedules cut from a sequential run, each in a world of its own, all at once:
    the failures, and the races the runs met."""
    record = together(new_world(scenario, visibility_timeout=VISIBILITY), scenario, SEQUENTIAL)

    def run(schedule) -> tuple[str | None, set[str]]:
        try:
            return None, races(together(new_world(scenario, visibility_timeout=VISIBILITY), scenario, schedule))
        except RunFailed as exc:
            return str(exc), set()

    schedules = schedules_after(record.history)
    with ThreadPoolExecutor(max_workers=len(schedules)) as pool:
        results = list(pool.map(run, schedules))
    return [failure for failure, _ in results if failure], set().union(*(met for _, met in results))


def every_interleaving(new_world, scenario: Scenario) -> tuple[list[str], set[str], int]:
    """Each schedule once, in waves of the runs that part from the last wave's: the
    failures, the races the runs met, and how many runs there were."""
    def run(schedule: Replayed) -> tuple[str | None, set[str]]:
        try:
            return None, races(together(new_world(scenario, visibility_timeout=VISIBILITY), scenario, schedule))
        except RunFailed as exc:
            return str(exc), set()

    wave, results = [Replayed(())], []
    while wave:
        if len(results) + len(wave) > MAX_INTERLEAVINGS:
            # Each new decision multiplies the runs: a controller that never settles would never end.
            results.append((f"more than {MAX_INTERLEAVINGS} interleavings: the scenario is not as small as it was",
                            set()))
            break
        with ThreadPoolExecutor(max_workers=min(len(wave), 32)) as pool:
            results += pool.map(run, wave)
        wave = [other for schedule in wave for other in schedule.others()]
    return [failure for failure, _ in results if failure], set().union(*(met for _, met in results)), len(results)


# --- tests -------------------------------------------------------------------------


# The poison message's scenario is small enough for every interleaving, below.
@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.name != "poison"], ids=lambda s: s.name)
def test_two_controllers_at_once_leave_each_file_one_outcome(scenario, new_world):
    failures, met = sweep(new_world, scenario)

    assert not failures, "\n".join(failures)
    assert MEETS[scenario.name] <= met, met


def test_of_two_controllers_that_both_saw_a_job_end_one_labels_it_and_counts_it(new_world):
    # Found by the sweep: both listed the ended Job unlabelled, then each labelled it and
    # counted it in jobs_finished; the label now names the version listed, so A's fails.
    loads = SCENARIOS[0]
    world = new_world(loads, visibility_timeout=VISIBILITY)

    turns = together(world, loads, Preempted(k=1))

    [job] = [job.metadata.name for job in world.jobs()]
    assert [str(call) for call in turns.history if call.operation in ("kube.unhandled", "kube.mark_handled")
            and call.round == 2] == [f"2: A kube.unhandled({job}) -> ended, unlabelled",
                                     f"2: B kube.unhandled({job}) -> ended, unlabelled",
                                     f"2: B kube.mark_handled({job}) -> succeeded",
                                     f"2: A kube.mark_handled({job}) -> Conflict"]


def test_two_controllers_may_start_twice_max_active_jobs_between_them(new_world):
    # Accepted (README, "Two controllers at once"): each counts the Jobs that run, but
    # each receives for itself, so both may receive before either has made its Job.
    running = []
    for schedule in (SEQUENTIAL, Preempted(k=1)):
        world = new_world(SCENARIOS[0], visibility_timeout=VISIBILITY, max_active_jobs=1)
        for key in ("2016/jan.csv", "2016/feb.csv"):
            world.queues.send(s3_event(key))
        turns = Turns(world, schedule)
        turns.run_round()
        turns.abort()
        running.append(len(world.running()))

    assert running == [1, 2]


def test_two_controllers_on_a_poison_message_in_every_order_set_it_aside(new_world):
    poison = next(scenario for scenario in SCENARIOS if scenario.name == "poison")

    failures, met, runs = every_interleaving(new_world, poison)

    assert not failures, f"{len(failures)} of {runs} interleavings:\n" + "\n".join(failures)
    assert MEETS[poison.name] <= met, met
