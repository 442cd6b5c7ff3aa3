#!/usr/bin/env python3
"""Summarise an Autobahn|Testsuite fuzzingclient report (reports/index.json) for one agent.

Prints one row per case (case, behavior, behaviorClose, close code, duration), then the cases
that passed with a remark, then the failures. Exit status: 0 when no case failed, 1 when one did,
2 when the report is missing, unreadable, has no case for the agent, or lacks cases the suite
said it would run (a run that tested nothing, or stopped half-way, must not look green).

The suite's log (its stdout) names the cases it selected on a line `Cases = ['1.1.1', ...]`.
When the server stops accepting connections the suite gives up, writes a report of the cases
done so far and exits 0; comparing with that line is how such a run is caught.

What counts as a failure follows the colours of the suite's own HTML report: red is a failure.
That is `FAILED` (and anything this script does not know) in either column, and `UNCLEAN` in
behaviorClose (the spec wanted a clean close). The yellow and grey outcomes pass but are listed:
NON-STRICT, NO_CLOSE, INFORMATIONAL, UNIMPLEMENTED, and for the close WRONG CODE (a close code
outside the expected set) and FAILED BY CLIENT (the client, not the server, dropped TCP).
"""

import ast
import json
import sys

PASSING_BEHAVIOR = {"OK", "NON-STRICT", "NO_CLOSE", "INFORMATIONAL", "UNIMPLEMENTED"}
PASSING_CLOSE = {"OK", "WRONG CODE", "FAILED BY CLIENT", "INFORMATIONAL", "UNIMPLEMENTED"}


def case_key(case_id):
    """Sort "6.10.2" after "6.9.1": compare the dotted parts as numbers."""
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def selected_cases(log_path):
    """The case ids the suite announced in its log, or None when the log has no such line."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("Cases = ["):
                return ast.literal_eval(line[len("Cases = ") :].strip())
    return None


def main(argv):
    if len(argv) not in (3, 4):
        print("usage: summarize.py INDEX_JSON AGENT [WSTEST_LOG]", file=sys.stderr)
        return 2
    index_path, agent = argv[1], argv[2]
    log_path = argv[3] if len(argv) == 4 else None
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print(f"autobahn: no usable report at {index_path}: {e}", file=sys.stderr)
        return 2
    cases = index.get(agent) or {}
    if not cases:
        print(
            f"autobahn: the report at {index_path} has no case for agent {agent!r}", file=sys.stderr
        )
        return 2

    rows = sorted(cases.items(), key=lambda kv: case_key(kv[0]))
    print(f"{'case':<10} {'behavior':<14} {'behaviorClose':<17} {'close':>5} {'ms':>6}")
    for case_id, r in rows:
        code = r.get("remoteCloseCode")
        print(
            f"{case_id:<10} {r.get('behavior', '?'):<14} {r.get('behaviorClose', '?'):<17} "
            f"{'-' if code is None else code:>5} {r.get('duration', 0):>6}"
        )

    failed, remarked = [], []
    counts = {}
    for case_id, r in rows:
        b, c = r.get("behavior"), r.get("behaviorClose")
        counts[(b, c)] = counts.get((b, c), 0) + 1
        if b not in PASSING_BEHAVIOR or c not in PASSING_CLOSE:
            failed.append((case_id, b, c))
        elif b != "OK" or c != "OK":
            remarked.append((case_id, b, c))

    print()
    print(f"{len(rows)} cases; behavior/behaviorClose counts:")
    for (b, c), n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {n:>4}  {b} / {c}")
    if remarked:
        print(f"\npassed with a remark ({len(remarked)}):")
        for case_id, b, c in remarked:
            print(f"  {case_id:<10} {b} / {c}")
    status = 0
    if failed:
        print(f"\nFAILED ({len(failed)}):")
        for case_id, b, c in failed:
            print(f"  {case_id:<10} {b} / {c}")
        status = 1
    if log_path is not None:
        try:
            expected = selected_cases(log_path)
        except (OSError, ValueError, SyntaxError) as e:
            print(f"autobahn: cannot read the selected cases from {log_path}: {e}", file=sys.stderr)
            return 2
        if expected is None:
            print(f"autobahn: {log_path} does not say which cases were selected", file=sys.stderr)
            return 2
        missing = [c for c in expected if c not in cases]
        if missing:
            print(
                f"\nINCOMPLETE: {len(missing)} of {len(expected)} selected cases have no result, "
                f"from {missing[0]} on (did the server stop accepting connections? see {log_path})"
            )
            return 2
    if status == 0:
        print("\nno case failed")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
