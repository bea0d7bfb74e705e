#!/usr/bin/env python3
"""Recompute posledger's hash chain from a `posledger events` listing, without posledger.

    posledger events > events.ndjson
    python3 tools/check_chain.py events.ndjson --head HASH@POSITION

Needs Python 3.9+ and the `blake3` package (pip install blake3). The rule it checks is
written out in ARCHITECTURE.md ("Checking the chain without posledger"):

    link(frame) = BLAKE3(previous link || u32 body length || u32 record count
                         || u64 first position || 8 zero bytes || body)

little-endian, the body being the frame's records' stored bytes back to back, and the first
previous link 32 zero bytes. The link of the last frame is the head hash. Each event line's
readable fields are also checked against its stored bytes, so what a reader sees is what
the chain commits to.

Exit status: 0 when everything agrees, 1 when anything does not (the first difference is
printed), 2 when the input cannot be read at all.
"""

import argparse
import json
import struct
import sys

from blake3 import blake3

ZERO_LINK = bytes(32)


class Mismatch(Exception):
    pass


def parse_record(stored):
    """The fields of one stored record (length prefix, CRC32C, body)."""
    if len(stored) < 8 + 61:
        raise Mismatch("a stored record is shorter than its fixed part")
    (body_len,) = struct.unpack_from("<I", stored, 0)
    if len(stored) != 8 + body_len:
        raise Mismatch("a stored record's length prefix says %d bytes, it holds %d" % (body_len, len(stored) - 8))
    body = stored[8:]
    position, revision, _prev = struct.unpack_from("<QQQ", body, 0)
    event_id = body[24:40]
    occurred_us, recorded_us = struct.unpack_from("<qq", body, 40)
    schema_version, stream_len = struct.unpack_from("<HH", body, 56)
    type_len = body[60]
    stream = body[61:61 + stream_len].decode("utf-8")
    event_type = body[61 + stream_len:61 + stream_len + type_len].decode("utf-8")
    payload = body[61 + stream_len + type_len:]
    return {
        "position": position,
        "revision": revision,
        "event_id": event_id.hex(),
        "occurred_us": occurred_us,
        "recorded_us": recorded_us,
        "schema_version": schema_version,
        "stream": stream,
        "type": event_type,
        "payload": payload,
    }


def check_event_line(line, fields):
    """The readable fields of an event line are those of its stored bytes."""
    for key in ("position", "revision", "schema_version", "stream", "type"):
        if line.get(key) != fields[key]:
            raise Mismatch("event at position %s: %s %r is not the stored %r"
                           % (fields["position"], key, line.get(key), fields[key]))
    if line.get("event_id", "").replace("-", "") != fields["event_id"]:
        raise Mismatch("event at position %s: event_id is not the stored one" % fields["position"])
    try:
        stored_payload = json.loads(fields["payload"])
    except ValueError:
        stored_payload = fields["payload"].decode("utf-8", "replace")
    if line.get("payload") != stored_payload:
        raise Mismatch("event at position %s: payload is not the stored one" % fields["position"])


def frame_link(prev, first_position, stored_records):
    body = b"".join(stored_records)
    header = struct.pack("<IIQ8x", len(body), len(stored_records), first_position)
    return blake3(prev + header + body).digest()


def check(lines, start_link):
    """Walks the listing; returns (position after the last event, last link, frames, events)."""
    link = start_link
    expected_position = None
    frame = None
    records = []
    frames = events = 0
    end = None

    def close_frame():
        nonlocal link, expected_position, frames, events
        if frame is None:
            return
        first = frame["first_position"]
        if expected_position is not None and first != expected_position:
            raise Mismatch("a commit starts at position %d, the one before ended at %d" % (first, expected_position))
        if len(records) != frame["records"]:
            raise Mismatch("the commit at position %d lists %d events, it says %d" % (first, len(records), frame["records"]))
        stored = []
        for i, line in enumerate(records):
            raw = bytes.fromhex(line["stored"])
            fields = parse_record(raw)
            if fields["position"] != first + i:
                raise Mismatch("the commit at position %d holds position %d in place %d" % (first, fields["position"], i))
            check_event_line(line, fields)
            stored.append(raw)
        link = frame_link(link, first, stored)
        if link.hex() != frame["link"]:
            raise Mismatch("the chain breaks at the commit from position %d: computed %s, listed %s"
                           % (first, link.hex(), frame["link"]))
        expected_position = first + len(records)
        frames += 1
        events += len(records)

    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError as e:
            raise Mismatch("line %d is not JSON: %s" % (number, e))
        if "frame" in line:
            close_frame()
            frame = line["frame"]
            records = []
            if link is None:
                if frame["first_position"] != 0:
                    raise Mismatch("the listing starts at position %d: give --start LINK, the head hash there"
                                   % frame["first_position"])
                link = ZERO_LINK
        elif "end" in line:
            close_frame()
            frame = None
            end = line["end"]
        elif "stored" in line:
            if frame is None:
                raise Mismatch("line %d: an event outside a commit" % number)
            records.append(line)
        else:
            raise Mismatch("line %d is neither a commit, an event nor the end" % number)
    if end is None:
        raise Mismatch("the listing has no end line: it was cut short")
    position = expected_position if expected_position is not None else end["events"]
    if position != end["events"] or (link is not None and end.get("link") not in (None, link.hex())):
        raise Mismatch("the end line says %s at %s, the events listed end in %s at %s"
                       % (end.get("link"), end["events"], link.hex() if link else None, position))
    return position, link, frames, events


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("listing", help="a `posledger events` listing, or - for standard input")
    parser.add_argument("--head", help="the head hash it must end in, as HASH@POSITION (an anchor, "
                        "or `posledger verify --format json`'s head)")
    parser.add_argument("--start", help="the link the listing starts from, when it does not start at 0")
    args = parser.parse_args()
    try:
        stream = sys.stdin if args.listing == "-" else open(args.listing, encoding="utf-8")
        lines = stream.readlines()
    except OSError as e:
        print("cannot read the listing: %s" % e, file=sys.stderr)
        return 2
    start = bytes.fromhex(args.start) if args.start else None
    try:
        position, link, frames, events = check(lines, start)
        if args.head:
            want_hash, _, want_position = args.head.partition("@")
            if link is None or link.hex() != want_hash.lower() or str(position) != want_position:
                raise Mismatch("the chain ends in %s at %d, not in the head %s"
                               % (link.hex() if link else None, position, args.head))
    except (Mismatch, KeyError, TypeError, ValueError) as e:
        print("FAIL: %s" % e)
        return 1
    print("ok: %d events in %d commits, chain ends in %s at position %d"
          % (events, frames, link.hex() if link else "-", position))
    if not args.head:
        print("compare that hash with a head published outside posledger (--head HASH@POSITION)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
