"""Wire encoding and frames: fast encoding equals the reference, frames survive any split."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtufin.envelope import Envelope, encode
from virtufin.runtime import wire
from virtufin.runtime.frames import (
    HEADER,
    ChannelClosed,
    FrameChannel,
    FrameTimeout,
    ProtocolError,
    pack,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False,
    allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
    max_size=4),
    max_leaves=12,
)  # fmt: skip
times = st.datetimes(
    min_value=datetime(1000, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@given(
    data=json_values | st.binary(max_size=16),
    time=times,
    eventtime=st.none() | times,
    subject=st.none() | st.text(max_size=10),
    ext=st.dictionaries(st.sampled_from(["replytopic", "websocketid", "n1"]),
                        st.text(max_size=5) | st.integers() | st.booleans(), max_size=2),
)  # fmt: skip
@settings(max_examples=150, deadline=None)
def test_event_json_is_byte_identical_to_encode(data, time, eventtime, subject, ext):
    envelope = Envelope(
        id="i",
        source="urn:s",
        type="t",
        data=data,
        time=time,
        subject=subject,
        eventtime=eventtime,
        clocktype="historical",
        scenarioid="S",
        extensions=ext,
    )
    wire._cache[0] = None
    assert wire.event_json(envelope) == encode(envelope)


def test_non_utc_times_and_the_cache():
    tz = timezone(timedelta(hours=2))
    envelope = Envelope(id="i", source="s", type="t", time=datetime(2024, 1, 1, 5, tzinfo=tz))
    assert wire.event_json(envelope) == encode(envelope)
    assert wire.event_json(envelope) is wire.event_json(envelope)


def pair() -> tuple[FrameChannel, socket.socket]:
    left, right = socket.socketpair()
    return FrameChannel(left, buffer_bytes=16), right


def test_frames_arrive_whole_whatever_the_split():
    channel, peer = pair()
    bodies = [b'{"type":"pong"}', b"x" * 100_000, b"", b'{"type":"result"}']
    raw = b"".join(pack(b) for b in bodies)

    def dribble() -> None:
        for i in range(0, len(raw), 7777):
            peer.sendall(raw[i : i + 7777])

    sender = threading.Thread(target=dribble)
    sender.start()
    try:
        assert [channel.recv(5) for _ in bodies] == bodies
    finally:
        sender.join()
        channel.close()
        peer.close()


def test_timeouts_closed_peers_and_oversized_frames():
    channel, peer = pair()
    try:
        with pytest.raises(FrameTimeout):
            channel.recv(0.05)
        peer.sendall(HEADER.pack(1 << 30))
        with pytest.raises(ProtocolError, match="exceeds"):
            channel.recv(1)
    finally:
        channel.close()
        peer.close()
    channel, peer = pair()
    peer.sendall(pack(b"last"))
    peer.close()
    assert channel.recv(1) == b"last"
    with pytest.raises(ChannelClosed):
        channel.recv(1)
    channel.close()
