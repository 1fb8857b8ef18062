#!/usr/bin/env python3
"""Reads a callgrind dump made with --dump-instr=yes --cache-sim=yes and prints, per
transaction: instructions, distinct 64-byte code lines whose most-run instruction ran in
at least 9 of 10 transactions (and their KiB), L1 data misses (reads and writes) and L1
instruction misses. Usage: footprint.py DUMP TRANSACTIONS [--functions N] (with
--functions, also the N functions holding the most of those code lines)."""

import collections
import re
import sys


def number(text, current):
    """A position in callgrind's compressed form: absolute, +relative, -relative or *."""
    if text == "*":
        return current
    if text[0] in "+-":
        value = int(text[1:], 16) if text[1:].startswith("0x") else int(text[1:])
        return current + value if text[0] == "+" else current - value
    return int(text, 16) if text.startswith("0x") else int(text)


def read(path):
    names, function, address, skip_next = {}, None, 0, False
    positions, events = 1, []
    totals = collections.Counter()
    per_instruction = collections.Counter()
    owner = {}

    def name(field):
        match = re.match(r"\((\d+)\)(?: (.*))?", field)
        if not match:
            return field
        if match.group(2) is not None:
            names[match.group(1)] = match.group(2)
            return match.group(2)
        return names.get(match.group(1), field)

    with open(path, errors="replace") as dump:
        for line in dump:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("positions:"):
                positions = len(line.split()) - 1
            elif line.startswith("fn="):
                function = name(line[3:])
            elif line.startswith("cfn="):
                name(line[4:])
            elif line.startswith("calls="):
                # The cost line after a call is the callee's, counted where it ran.
                skip_next = True
            elif line[0] in "0123456789+-*":
                fields = line.split()
                address = number(fields[0], address)
                if skip_next:
                    skip_next = False
                    continue
                values = [int(v) for v in fields[positions:]]
                for event, value in zip(events, values):
                    totals[event] += value
                if values:
                    per_instruction[address] += values[0]
                    owner[address] = function
    return totals, per_instruction, owner


def main():
    path, transactions = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--functions" else 0
    totals, per_instruction, owner = read(path)
    hottest = {}
    for address, count in per_instruction.items():
        line = address >> 6
        if count > hottest.get(line, (0, None))[0]:
            hottest[line] = (count, owner[address])
    hot = [line for line, (count, _) in hottest.items() if count >= 0.9 * transactions]
    per = lambda event: totals.get(event, 0) / transactions
    print(
        "%.0f %d %.1f %.1f %.1f"
        % (per("Ir"), len(hot), len(hot) * 64 / 1024, per("D1mr") + per("D1mw"), per("I1mr"))
    )
    if top:
        functions = collections.Counter(hottest[line][1] for line in hot)
        for function, lines in functions.most_common(top):
            print("%5d  %s" % (lines, function))


if __name__ == "__main__":
    main()
