#!/usr/bin/env python3
"""Validates a trace written by a benchmark's --trace=run.json against a JSON
Schema of the Chrome trace event format's parts it uses (the format Perfetto's
UI and chrome://tracing open; "Trace Event Format", Google, 2016):
metadata ("M": process_name, process_sort_index, thread_name), complete
events ("X": ts, dur in microseconds) and flow events ("s"/"f" with an id,
the "f" binding to the enclosing slice, "bp": "e"). Beyond the schema it
checks that every flow that starts ends, not earlier, and that each "X"
sits on a named thread.

  python3 -m pip install jsonschema   # once
  python3 tools/check_chrome_trace.py run.json

Exit status 0 and "ok: ..." when valid; 1 and the first problem otherwise.
The C++ side checks the same promises in core/trace.cc's CheckChromeTrace
(//core:trace_test, //backends:executor_test), without Python.
"""
import json
import sys

import jsonschema

NUMBER = {"type": "number"}
INT = {"type": "integer"}
SCHEMA = {
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "traceEvents": {
            "type": "array",
            "items": {
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["name", "ph", "pid", "tid", "args"],
                        "properties": {
                            "name": {"enum": ["process_name", "process_sort_index",
                                              "thread_name", "thread_sort_index"]},
                            "ph": {"const": "M"},
                            "pid": INT, "tid": INT,
                            "args": {"type": "object"},
                        },
                    },
                    {
                        "type": "object",
                        "required": ["name", "ph", "pid", "tid", "ts", "dur"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "cat": {"type": "string"},
                            "ph": {"const": "X"},
                            "pid": INT, "tid": INT,
                            "ts": {"type": "number", "minimum": 0},
                            "dur": {"type": "number", "minimum": 0},
                            "args": {"type": "object"},
                        },
                    },
                    {
                        "type": "object",
                        "required": ["name", "ph", "pid", "tid", "ts", "id"],
                        "properties": {
                            "name": {"type": "string"},
                            "cat": {"type": "string"},
                            "ph": {"enum": ["s", "f"]},
                            "bp": {"const": "e"},
                            "pid": INT, "tid": INT, "id": INT,
                            "ts": {"type": "number", "minimum": 0},
                        },
                    },
                ]
            },
        },
        "displayTimeUnit": {"enum": ["ms", "ns"]},
    },
}


def main(path):
    with open(path) as f:
        doc = json.load(f)
    jsonschema.validate(doc, SCHEMA)
    named, starts, ends, slices = set(), {}, {}, 0
    for e in doc["traceEvents"]:
        if e["ph"] == "M" and e["name"] == "thread_name":
            named.add((e["pid"], e["tid"]))
    for e in doc["traceEvents"]:
        key = (e.get("cat"), e.get("id"))
        if e["ph"] == "X":
            slices += 1
            if (e["pid"], e["tid"]) not in named:
                raise SystemExit(f"{e['name']} is on an unnamed track {e['pid']}/{e['tid']}")
        elif e["ph"] == "s":
            if key in starts:
                raise SystemExit(f"flow {key} starts twice")
            starts[key] = e["ts"]
        elif e["ph"] == "f":
            if key not in starts or e["ts"] < starts[key]:
                raise SystemExit(f"flow {key} ends before it starts")
            ends[key] = e["ts"]
    if set(starts) != set(ends):
        raise SystemExit(f"{len(set(starts) - set(ends))} flows never end")
    print(f"ok: {slices} slices on {len(named)} tracks, {len(starts)} flows")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: check_chrome_trace.py run.json")
    main(sys.argv[1])
