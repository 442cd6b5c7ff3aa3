#!/usr/bin/env python3
"""Bytes per connection by allocation site at massif's peak snapshot.
Usage: massif_sites.py massif.out CONNECTIONS"""
import re
import sys

GENERIC = re.compile(r"alloc::|core::|RawVec|raw_vec|__rust|__rdl|hashbrown|<alloc|<core|malloc|realloc|calloc|"
                     r"UnknownInlinedFun|aligned_malloc|^alloc$|alloc_impl|allocate|box_new|with_capacity|^new$|^\{")

def main():
    lines = open(sys.argv[1]).read().split("\n")
    connections = int(sys.argv[2])
    start = max(i for i, l in enumerate(lines) if l.startswith("heap_tree=peak"))
    tree = []
    for l in lines[start + 1:]:
        if l.startswith("#-----") or l.startswith("snapshot="):
            break
        m = re.match(r"^(\s*)n(\d+): (\d+) (.*)$", l)
        if m:
            tree.append((len(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)))
    total = tree[0][2]
    print(f"peak heap {total} B = {total / connections:.0f} B per connection ({connections} connections)")
    # Each child of the root is one allocation site; name it by its first non-generic frame.
    i = 1
    while i < len(tree):
        depth, _, size, desc = tree[i]
        if depth != 1:
            i += 1
            continue
        name, j = None, i
        while j < len(tree) and (j == i or tree[j][0] > 1):
            d = re.sub(r"^0x[0-9A-F]+: ", "", tree[j][3])
            d = re.sub(r" \(.*?\)$", "", d)
            if name is None and not GENERIC.search(d):
                name = d[:150]
            j += 1
        print(f"{size / connections:7.0f} B/conn {100 * size / total:5.1f}%  {name or desc[:150]}")
        i = j

if __name__ == "__main__":
    main()
