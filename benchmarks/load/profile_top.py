"""Summarise py-spy raw (collapsed) output: top functions by self and inclusive samples.

usage: profile_top.py FILE [N]
"""
import collections
import sys

path = sys.argv[1]
top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
own: collections.Counter[str] = collections.Counter()
inclusive: collections.Counter[str] = collections.Counter()
total = 0
with open(path) as f:
    for line in f:
        stack, _, count = line.rstrip().rpartition(" ")
        n = int(count)
        frames = [fr.split(" (")[0] + " (" + fr.split(" (")[-1].split(":")[0].split("/")[-1] + ")"
                  for fr in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for fr in set(frames):
            inclusive[fr] += n
print(f"{total} samples")
for title, counter in (("self", own), ("inclusive", inclusive)):
    print(f"\n-- {title}")
    for name, n in counter.most_common(top):
        print(f"{100 * n / total:5.1f}%  {name}")
