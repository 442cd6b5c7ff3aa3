#!/usr/bin/env python3
"""Per-mutation instruction counts of two callgrind dumps side by side (inclusive, by function),
largest differences first: what one build does per mutation that the other does not.
Usage: callgrind_diff.py A.out N_A B.out N_B [ROWS]   (N = mutations counted in each window)"""
import re
import subprocess
import sys
from collections import Counter

LINE = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(?:\*\s+)?(.*)$")


def inclusive(path):
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--auto=no", path],
        capture_output=True, text=True, check=True,
    ).stdout
    counts = Counter()
    for line in text.splitlines():
        m = LINE.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = m.group(2)
        name = re.sub(r"\s*\[[^\]]*\]$", "", name)  # the object file
        name = name.split(":", 1)[-1] if not name.startswith("0x") else name
        counts[name] += int(m.group(1).replace(",", ""))
    return counts


def main():
    a_path, n_a, b_path, n_b = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    rows = int(sys.argv[5]) if len(sys.argv) > 5 else 40
    a, b = inclusive(a_path), inclusive(b_path)
    per_a = {k: v / n_a for k, v in a.items()}
    per_b = {k: v / n_b for k, v in b.items()}
    names = set(per_a) | set(per_b)
    diff = sorted(names, key=lambda k: -abs(per_a.get(k, 0) - per_b.get(k, 0)))
    print(f"{'A':>10} {'B':>10} {'A-B':>10}  function (instructions per mutation, inclusive)")
    for k in diff[:rows]:
        x, y = per_a.get(k, 0), per_b.get(k, 0)
        print(f"{x:10.0f} {y:10.0f} {x - y:+10.0f}  {k[:140]}")


if __name__ == "__main__":
    main()
