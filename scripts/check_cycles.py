#!/usr/bin/env python3
"""Fails when files of one crate import each other in a cycle.

Usage: scripts/check_cycles.py [SRC_DIR ...]   (default: every crates/*/src and benches/src)

Each `.rs` file is a node. File A depends on file B when A names an item that B defines,
through a `use` or through a qualified path (`crate::x::Y`, `super::Y`, `self::y::Z`) anywhere in
its code. Paths are resolved to the file that *defines* the item, following re-exports, so a
`pub use` in `lib.rs` or a folder's `mod.rs` is a signpost, not a dependency; declaring a module
(`mod x;`) is not a dependency either. Code under `#[cfg(test)]` (a `mod tests { .. }` block or a
test-only file) is left out: unit tests may reach anywhere.

One allowance: a file may use its own parent module (`super::` from `a/b.rs` into `a/mod.rs`).
Rust splits one type's `impl` blocks over a folder that way (`connection/recv.rs` holds
`impl Connection` for receiving), and the parent necessarily names the children's types; the
edge from a child to its parent is therefore not counted. Every other edge counts: between
siblings, across folders, from a parent to its children.

A strongly connected component of more than one file is a cycle: the script prints it with the
imports that close it and exits 1. It reads the source as text (comments and string literals are
blanked first); it does not run the compiler, so a path built by a macro is not seen.
"""

import os
import re
import sys
from glob import glob

ITEM_RE = re.compile(
    r"\b(?:struct|enum|trait|fn|type|const|static|union|mod|macro_rules!)\s+(?:r#)?([A-Za-z_]\w*)"
)
USE_RE = re.compile(r"(\bpub(?:\s*\([^)]*\))?\s+)?\buse\s+([^;]+);")
PATH_RE = re.compile(r"\b(crate|super|self)((?:\s*::\s*(?:r#)?[A-Za-z_]\w*)+)")


def strip_code(text):
    """Blanks comments, string and char literals, keeping line breaks (for line numbers)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}') or a lifetime ('a): blank only the former.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(text, open_index):
    depth = 0
    for j in range(open_index, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


def strip_test_modules(text):
    """Blanks `#[cfg(test)] mod name { .. }` blocks; returns the text and test-only `mod x;` names."""
    test_files = set()
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text):
        test_files.add(m.group(1))
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
        if not m:
            return text, test_files
        end = matching_brace(text, m.end() - 1)
        text = text[:m.start()] + "\n" * text.count("\n", m.start(), end + 1) + text[end + 1:]


def split_use_tree(prefix, tree):
    """`a::{b, c::{d as e}}` -> [a::b, a::c::d]; `self` inside braces names the prefix."""
    tree = tree.strip()
    if not tree:
        return []
    if tree.startswith("{") and tree.endswith("}"):
        parts, depth, start = [], 0, 1
        for j, ch in enumerate(tree):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 1:
                parts.append(tree[start:j])
                start = j + 1
        parts.append(tree[start:-1])
        paths = []
        for part in parts:
            paths += split_use_tree(prefix, part)
        return paths
    head, sep, rest = tree.partition("::")
    head = head.strip()
    if sep and rest.strip():
        return split_use_tree(prefix + [head], rest)
    name = re.split(r"\s+as\s+", head)[0].strip()
    if name == "self":
        return [prefix]
    return [prefix + [name]]


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module path tuple -> file
        self.code = {}  # file -> stripped text
        self.defs = {}  # file -> set of item names
        self.uses = {}  # file -> {visible name: (absolute path, line)}
        self.test_only = set()
        roots = [f for f in ("lib.rs", "main.rs") if os.path.exists(os.path.join(src, f))]
        for root in roots:
            self.load(os.path.join(src, root), ())

    def module_file(self, path, name):
        base = os.path.dirname(path) if os.path.basename(path) in ("lib.rs", "main.rs", "mod.rs") \
            else os.path.splitext(path)[0]
        for cand in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
            if os.path.exists(cand):
                return cand
        return None

    def load(self, path, modpath):
        if path in self.code:
            return
        with open(path, encoding="utf-8") as f:
            raw = f.read()
        text, test_mods = strip_test_modules(strip_code(raw))
        self.files[modpath] = path
        self.code[path] = text
        self.defs[path] = set(ITEM_RE.findall(text))
        for m in re.finditer(r"(?:#\[path\s*=\s*\"\"\]\s*)?\bmod\s+(?:r#)?(\w+)\s*;", text):
            child = self.module_file(path, m.group(1))
            if child:
                self.load(child, modpath + (m.group(1),))
        for name in test_mods:
            child = self.module_file(path, name)
            if child:
                self.test_only.add(child)

    def absolute(self, modpath, segs):
        """Turns `crate`/`super`/`self` paths into absolute segment lists."""
        segs = list(segs)
        if segs[0] == "crate":
            return segs[1:]
        cur = list(modpath)
        while segs and segs[0] in ("super", "self"):
            if segs.pop(0) == "super":
                cur = cur[:-1]
        return cur + segs

    def collect_uses(self):
        for modpath, path in self.files.items():
            uses = {}
            text = self.code[path]
            for m in USE_RE.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                body = re.sub(r"\s+", " ", m.group(2)).strip()
                for segs in split_use_tree([], body):
                    if not segs:
                        continue
                    if segs[0] in ("crate", "super", "self"):
                        absolute = self.absolute(modpath, segs)
                    elif tuple(modpath) + (segs[0],) in self.files:
                        # A path relative to this module (`use child::Item`).
                        absolute = list(modpath) + segs
                    else:
                        continue  # another crate
                    alias = re.search(r"(\w+)\s+as\s+(\w+)", body)
                    entry = (absolute, line, bool(m.group(1)))
                    uses[segs[-1]] = entry
                    if alias and alias.group(1) == segs[-1]:
                        uses[alias.group(2)] = entry
            self.uses[path] = uses

    def resolve(self, segs, seen=None):
        """The file defining the item named by an absolute path."""
        seen = seen or set()
        modpath = ()
        rest = list(segs)
        while rest and modpath + (rest[0],) in self.files:
            modpath += (rest.pop(0),)
        path = self.files[modpath]
        if not rest or rest[0] in self.defs[path]:
            return path
        key = (path, rest[0])
        if key in seen:
            return path
        seen.add(key)
        reexport = self.uses[path].get(rest[0])
        if reexport:
            return self.resolve(reexport[0] + rest[1:], seen)
        return path

    def edges(self):
        self.collect_uses()
        out = {}
        for modpath, path in self.files.items():
            if path in self.test_only:
                continue
            parent = self.files.get(modpath[:-1]) if modpath else None
            # A `pub use` is a signpost (resolved through, above), not a dependency.
            text = USE_RE.sub(lambda m: "\n" * m.group(0).count("\n") if m.group(1) else m.group(0),
                              self.code[path])
            deps = {}
            for m in PATH_RE.finditer(text):
                segs = [m.group(1)] + [s.strip().removeprefix("r#") for s in m.group(2).split("::") if s.strip()]
                line = text.count("\n", 0, m.start()) + 1
                target = self.resolve(self.absolute(modpath, segs))
                if target not in (path, parent) and target not in self.test_only:
                    deps.setdefault(target, line)
            # Brace groups of `use` statements name their items after the prefix.
            for absolute, line, public in self.uses[path].values():
                if public:
                    continue
                target = self.resolve(absolute)
                if target not in (path, parent) and target not in self.test_only:
                    deps.setdefault(target, line)
            out[path] = deps
        return out


def strongly_connected(graph):
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return [c for c in comps if len(c) > 1]


def main(argv):
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    srcs = argv or sorted(glob(os.path.join(top, "crates", "*", "src"))) + [os.path.join(top, "benches", "src")]
    failed = False
    for src in srcs:
        if not os.path.isdir(src):
            continue
        crate = Crate(src)
        graph = crate.edges()
        rel = lambda p: os.path.relpath(p, top)
        cycles = strongly_connected(graph)
        print(f"{rel(src)}: {len(graph)} files, {sum(len(d) for d in graph.values())} import edges, "
              f"{len(cycles)} cycle(s)")
        for comp in cycles:
            failed = True
            members = set(comp)
            print(f"  cycle of {len(comp)} files:")
            for f in sorted(comp):
                for target, line in sorted(graph[f].items()):
                    if target in members:
                        print(f"    {rel(f)}:{line} -> {rel(target)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
