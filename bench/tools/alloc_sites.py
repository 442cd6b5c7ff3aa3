#!/usr/bin/env python3
"""Attributes malloc/realloc uprobe samples to their allocation site: the first frame above the
allocator that is not generic alloc/RawVec/Box/clone plumbing. Usage:
perf record -e probe_libc:malloc --call-graph dwarf -p PID; perf script -F event,ip,sym --no-inline | alloc_sites.py"""
import re
import sys
from collections import Counter

GENERIC = re.compile(r"^(__GI___libc_malloc|__libc_malloc|malloc|realloc|__GI___libc_realloc|_int_|alloc::|core::|<alloc::|<core::|__rust_|__rdl_|hashbrown::raw|<hashbrown|std::alloc|bytes::bytes_mut::BytesMut::reserve_inner|<bytes::|bytes::|serde_json::ser::format_escaped|<&mut serde_json::ser|serde_json::ser::|<serde_json|indexmap::|<indexmap|<str as |std::io::|<std::io|<hyper|<.*Vec<|.*RawVec|.*raw_vec|\[unknown\])")

def stacks(lines):
    frames, event = [], None
    for line in lines:
        if not line.strip():
            if frames:
                yield event, frames
            frames, event = [], None
            continue
        if re.match(r"^\s*\S+:\S+:\s*$", line) or not line.startswith((" ", "\t")):
            if frames:
                yield event, frames
                frames = []
            event = line.strip().split(":")[1] if ":" in line else line.strip()
            continue
        parts = line.strip().split(None, 1)
        frames.append(parts[1] if len(parts) > 1 else "")
    if frames:
        yield event, frames

def main():
    sites = Counter()
    total = 0
    for event, frames in stacks(sys.stdin):
        total += 1
        site = next((f for f in frames if not GENERIC.match(f)), frames[-1] if frames else "?")
        site = re.sub(r"::\{\{closure\}\}", "", site)[:150]
        sites[(event, site)] += 1
    print(f"{total} samples")
    for (event, site), n in sites.most_common(40):
        print(f"{100.0 * n / total:5.1f}%  {event:8} {site}")

if __name__ == "__main__":
    main()
