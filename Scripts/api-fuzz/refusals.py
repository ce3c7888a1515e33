"""Sums up the schema-valid requests the server refused during an API fuzz run (the JSON lines
hooks.py writes): how many of each kind, operation and reason, with one example body each.
Usage: refusals.py REFUSALS.jsonl"""
import collections
import json
import re
import sys


def reason(messages):
    """The most specific sentence, with array indices and numbers masked so that alike refusals
    group together."""
    text = messages[-1] if messages else "(no error body)"
    text = re.sub(r"\[\d+\]", "[N]", text)
    return re.sub(r"\b\d+\b", "N", text)[:220]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    groups = collections.OrderedDict()
    try:
        with open(sys.argv[1], encoding="utf-8") as log:
            for line in log:
                entry = json.loads(line)
                key = (entry["kind"], entry["operation"], entry["status"], reason(entry["messages"]))
                count, example = groups.get(key, (0, entry.get("body")))
                groups[key] = (count + 1, example)
    except FileNotFoundError:
        pass
    if not groups:
        print("api-fuzz: no schema-valid request was refused")
        return
    print(f"api-fuzz: schema-valid requests refused ({sum(c for c, _ in groups.values())}), by kind, operation and reason:")
    for (kind, operation, status, text), (count, example) in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[1][0])):
        print(f"  {count:5d}  {kind:15s} {status} {operation}: {text}")
        if example:
            print(f"         e.g. {example[:200]}")


if __name__ == "__main__":
    main()
