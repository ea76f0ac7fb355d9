"""The DevKit: context and emit rules, clocks, the Worker base, the script shape, commands."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import Enum

import pytest

from virtufin.envelope import Envelope
from workers.kit import (
    CommandReply,
    CommandWorker,
    Emission,
    HistoricalClock,
    ScriptWorker,
    WallClock,
    Worker,
    WorkerContext,
    emissions_from_output,
    order_id,
    parse_command,
)


def ev(data=None, type="com.example.in") -> Envelope:
    return Envelope.new(type=type, source="urn:com.virtufin.test", data=data)


def test_emit_queues_outputs_until_taken():
    ctx = WorkerContext(worker_id="w")
    ctx.emit("com.example.out", {"a": 1}, subject="s", topic="x.response")
    assert list(ctx.take_emitted()) == [Emission("com.example.out", {"a": 1}, "s", "x.response")]
    assert list(ctx.take_emitted()) == []


@pytest.mark.parametrize("bad", ["", None, 5])
def test_emit_refuses_a_missing_type(bad):
    with pytest.raises(ValueError, match="type must be a non-empty string"):
        WorkerContext(worker_id="w").emit(bad)  # type: ignore[arg-type]


def test_trading_events_cannot_pick_their_topic():
    with pytest.raises(ValueError, match="routed to the scenario's topic"):
        WorkerContext(worker_id="w").emit("com.virtufin.trading.order.submitted", {}, topic="a.b")


def test_context_is_read_only_where_it_should_be():
    ctx = WorkerContext(worker_id="w", params={"a": 1}, env={"K": "v"})
    with pytest.raises(TypeError):
        ctx.params["a"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        ctx.env["K"] = "x"  # type: ignore[index]
    assert ctx.logger.name == "virtufin.worker.w"


def test_clocks():
    clock = HistoricalClock()
    when = datetime(2024, 5, 1, tzinfo=UTC)
    clock.set(when)
    ctx = WorkerContext(worker_id="w", clock=clock)
    assert ctx.now() == when
    assert clock.clocktype == "historical"
    before = datetime.now(UTC)
    assert WallClock().now() >= before
    assert WallClock.clocktype == "wall"


def test_worker_base_names_the_missing_hook():
    class Bare(Worker):
        pass

    with pytest.raises(NotImplementedError, match=r"Bare\.on_event"):
        Bare().on_event(ev())
    with pytest.raises(NotImplementedError, match=r"Bare\.on_batch"):
        Bare().on_batch(None)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (None, []),
        ({"type": "t", "source": "ignored", "data": 1}, [Emission("t", 1)]),
        ([{"type": "a"}, {"type": "b", "subject": "s"}], [Emission("a"), Emission("b", None, "s")]),
    ],
)
def test_script_outputs(output, expected):
    assert emissions_from_output(output) == expected


@pytest.mark.parametrize(
    ("output", "message"),
    [(42, "output is a int"), ({"data": 1}, "no 'type' string"), ({"type": "t", "subject": 1},
     "'subject' must be a string"), ([{"type": "a"}, "x"], "output is a str")],
)  # fmt: skip
def test_script_garbage_is_described(output, message):
    with pytest.raises(ValueError, match=message):
        emissions_from_output(output)


def test_script_worker_runs_a_process_function_in_process():
    seen = []

    def process(event):
        seen.append(event)
        return {"type": "com.example.out", "data": event["data"] * 2}

    worker = ScriptWorker(process)
    worker.ctx = WorkerContext(worker_id="s")
    worker.on_event(ev(21))
    assert seen[0]["specversion"] == "1.0"
    assert seen[0]["data"] == 21
    assert list(worker.ctx.take_emitted()) == [Emission("com.example.out", 42)]


class Cmd(Enum):
    START = "start"
    STOP = "stop"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{oops", "Failed to parse command JSON"),
        (b"\xff", "Failed to parse command JSON"),
        ("[1, 2]", "Failed to parse command JSON"),
        (None, "Failed to parse command JSON"),
        ({}, "Missing 'command' field"),
        ({"command": None}, "Missing 'command' field"),
        ({"command": "launch"}, "Unknown command: launch"),
        ({"command": 3}, "Unknown command: 3"),
    ],
)
def test_malformed_commands_get_virtufins_error_replies(data, message):
    reply = parse_command(data, Cmd)
    assert isinstance(reply, CommandReply)
    assert reply.to_dict() == {"command": "error", "success": False, "message": message}


def test_commands_match_case_insensitively_by_value_or_name():
    assert parse_command('{"command": "StArT"}', Cmd)[0] is Cmd.START  # type: ignore[index]
    assert parse_command(b'{"command": "STOP", "id": 4}', Cmd) == (
        Cmd.STOP,
        {"command": "STOP", "id": 4},
    )
    assert parse_command({"command": "nope", "id": "9"}, Cmd).to_dict()["id"] == "9"  # type: ignore[union-attr]


def test_command_worker_replies_and_copies_the_request_id():
    class Ctl(CommandWorker[Cmd]):
        commands = Cmd

        def handle(self, command, request):
            if command is Cmd.STOP:
                raise RuntimeError("already stopped")
            return CommandReply.ok(command, "started")

    worker = Ctl()
    worker.ctx = WorkerContext(worker_id="ctl")
    worker.on_event(ev({"command": "start", "id": "a1"}))
    worker.on_event(ev({"command": "stop"}))
    worker.on_event(ev("not json"))
    replies = [e.data for e in worker.ctx.take_emitted()]
    assert replies == [
        {"command": "start", "success": True, "id": "a1", "message": "started"},
        {"command": "stop", "success": False, "message": "already stopped"},
        {"command": "error", "success": False, "message": "Failed to parse command JSON"},
    ]


def test_command_worker_without_handle_names_it():
    class Lazy(CommandWorker[Cmd]):
        commands = Cmd

    worker = Lazy()
    worker.ctx = WorkerContext(worker_id="l")
    with pytest.raises(NotImplementedError, match=r"Lazy\.handle"):
        worker.handle(Cmd.START, {})


def test_order_ids_derive_from_worker_input_and_ordinal_only():
    assert order_id("w", "urn:src", "bar-1") == order_id("w", "urn:src", "bar-1", 0)
    made = {
        order_id(w, s, i, n)
        for w in ("w", "v")
        for s in ("urn:src", "urn:other")
        for i in ("bar-1", "bar-2")
        for n in (0, 1)
    }
    assert len(made) == 16
    assert all(re.fullmatch(r"[wv]-[0-9a-f]{20}", m) for m in made)
    # No ambiguity between fields: moving a separator-like character changes the id.
    assert order_id("w", "a|b", "c") != order_id("w", "a", "b|c")


def test_ctx_order_id_counts_within_one_input_and_repeats_for_a_redelivery():
    ctx = WorkerContext(worker_id="w")
    event = ev()
    ctx.event = event
    first = [ctx.order_id(), ctx.order_id()]
    assert first == [order_id("w", event.source, event.id, n) for n in (0, 1)]
    ctx.take_emitted()  # the host, after the input
    ctx.event = ev()
    assert ctx.order_id() != first[0]  # a new input
    ctx.take_emitted()
    ctx.event = event  # the same input again (the same object, as a redelivery may be)
    assert ctx.order_id() == first[0]


def test_ctx_order_id_needs_an_input():
    with pytest.raises(RuntimeError, match="call it in on_event"):
        WorkerContext(worker_id="w").order_id()


def test_only_workers_overriding_snapshot_are_stateful():
    class Plain(Worker):
        pass

    class Keeps(Worker):
        def snapshot(self):
            return 1

    assert not Plain.is_stateful()
    assert Keeps.is_stateful()
    with pytest.raises(NotImplementedError, match=r"Keeps\.restore"):
        Keeps().restore(1)
