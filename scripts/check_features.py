#!/usr/bin/env python3
"""Builds (`cargo clippy --lib`, warnings as errors) every combination of a crate's cargo features, as
`cargo hack check --feature-powerset` does, without installing cargo-hack.

Usage: scripts/check_features.py [--dry-run] [PACKAGE ...]   (default: every workspace member
under crates/ that declares features)

The features drive most of the `#[cfg]`s, so a combination nobody builds is where a missing
import or an unused item hides. Combinations are taken over the crate's own features (not
`default`) and folded through their implications (`axum = ["hyper", ...]` makes {axum} and
{axum, hyper} the same build), so each distinct set is checked once, with
`--no-default-features --features <set>`.
"""

import itertools
import os
import subprocess
import sys
import tomllib

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def crate_features(manifest):
    with open(manifest, "rb") as f:
        data = tomllib.load(f)
    return data["package"]["name"], data.get("features", {})


def closure(chosen, features):
    """`chosen` plus every feature of this crate they enable, directly or not."""
    done, todo = set(), list(chosen)
    while todo:
        feature = todo.pop()
        if feature in done:
            continue
        done.add(feature)
        for item in features.get(feature, []):
            # "dep:x" and "x/feature" name dependencies, not features of this crate.
            if not item.startswith("dep:") and "/" not in item and item in features:
                todo.append(item)
    return frozenset(done)


def combinations(features):
    own = sorted(f for f in features if f != "default")
    seen = set()
    for size in range(len(own) + 1):
        for chosen in itertools.combinations(own, size):
            full = closure(chosen, features)
            if full not in seen:
                seen.add(full)
                yield sorted(full)


def main(argv):
    dry_run = "--dry-run" in argv
    wanted = [a for a in argv if not a.startswith("--")]
    manifests = sorted(
        os.path.join(TOP, "crates", d, "Cargo.toml") for d in os.listdir(os.path.join(TOP, "crates"))
    )
    failed = []
    for manifest in manifests:
        if not os.path.exists(manifest):
            continue
        name, features = crate_features(manifest)
        if (wanted and name not in wanted) or not features:
            continue
        sets = list(combinations(features))
        print(f"{name}: {len(sets)} distinct feature sets")
        for chosen in sets:
            # clippy's `-- -D warnings` reaches only this crate: the dependencies keep the
            # artifacts of the clippy step before (RUSTFLAGS would rebuild them all).
            cmd = ["cargo", "clippy", "-p", name, "--lib", "--no-default-features", "--locked", "--quiet"]
            if chosen:
                cmd += ["--features", ",".join(chosen)]
            cmd += ["--", "-D", "warnings"]
            print(f"  [{','.join(chosen) or 'none'}]", flush=True)
            if dry_run:
                continue
            if subprocess.run(cmd, cwd=TOP).returncode != 0:
                failed.append(f"{name} [{','.join(chosen) or 'none'}]")
    if failed:
        print("feature sets that do not build:\n  " + "\n  ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
