#!/usr/bin/env python3
"""Summarises an Autobahn index.json and fails on any unacceptable or regressed case.

usage: check_autobahn.py ROLE INDEX_JSON EXPECTED_JSON [--update]

Acceptable: behavior and behaviorClose each OK, NON-STRICT or INFORMATIONAL.
Regression: a case that is OK in EXPECTED_JSON and is not OK now, or a case missing.
--update (or AUTOBAHN_UPDATE=1) rewrites EXPECTED_JSON from INDEX_JSON.
"""
import collections
import os
import json
import sys

ACCEPTABLE = {"OK", "NON-STRICT", "INFORMATIONAL"}


def case_key(case_id):
    return tuple(int(p) for p in case_id.split("."))


def main():
    role, index_path, expected_path = sys.argv[1:4]
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print(f"autobahn {role}: no report ({e})")
        return 1
    cases = {}
    for agent_cases in index.values():
        for case_id, result in agent_cases.items():
            cases[case_id] = {"behavior": result["behavior"], "behaviorClose": result["behaviorClose"]}
    if "--update" in sys.argv or os.environ.get("AUTOBAHN_UPDATE") == "1":
        with open(expected_path, "w") as f:
            json.dump(dict(sorted(cases.items(), key=lambda kv: case_key(kv[0]))), f, indent=1)
            f.write("\n")
    try:
        with open(expected_path) as f:
            expected = json.load(f)
    except FileNotFoundError:
        print(f"autobahn {role}: no {expected_path}; nothing to compare with")
        expected = {}

    counts = collections.Counter()
    failures = []
    for case_id in sorted(cases, key=case_key):
        r = cases[case_id]
        worst = r["behavior"] if r["behavior"] != "OK" else r["behaviorClose"]
        counts[worst] += 1
        if r["behavior"] not in ACCEPTABLE or r["behaviorClose"] not in ACCEPTABLE:
            failures.append(f"{case_id}: {r['behavior']} / close {r['behaviorClose']}")
        elif case_id in expected and expected[case_id]["behavior"] == "OK" and r["behavior"] != "OK":
            failures.append(f"{case_id}: regressed from OK to {r['behavior']}")
        elif r != expected.get(case_id, r) and worst != "OK":
            print(f"autobahn {role}: note {case_id} now {r}, recorded {expected.get(case_id)}")
    for case_id in sorted(set(expected) - set(cases), key=case_key):
        failures.append(f"{case_id}: missing from the report")

    failed = len(failures)
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if k != "FAILED")
    print(f"autobahn {role}: {len(cases)} cases: {summary}, {failed} FAILED")
    for line in failures:
        print(f"  FAILED {line}")
    non_ok = [c for c in sorted(cases, key=case_key) if cases[c]["behavior"] != "OK" or cases[c]["behaviorClose"] != "OK"]
    if non_ok:
        print(f"autobahn {role}: not OK: " + ", ".join(f"{c} ({cases[c]['behavior']}/{cases[c]['behaviorClose']})" for c in non_ok))
    return 1 if failed or not cases else 0


if __name__ == "__main__":
    sys.exit(main())
