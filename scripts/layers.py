#!/usr/bin/env python3
"""The module-dependency check of `make lint`.

For each crate of the workspace it reads the paths of every `use` and of
every `crate::`/`super::`/`self::` path outside tests and comments,
resolves each to the file that defines it, and fails

- on an import cycle between files of one crate (each cycle is printed
  with one path through it);
- in a crate whose `lib.rs` documents its layers (lines such as
  ``//! 3. `procfs`, `rootfs`: what they hold``), on a top-level module
  that imports a module of its own layer or of a layer above, and on a
  top-level module that no layer names.

No existing tool fits: `cargo-modules` needs the network to install and
prints graphs rather than failing on rules. The parser is deliberately
small: Rust paths in `use` trees and in code, nothing else.

Usage: scripts/layers.py [CRATE_SRC_DIR ...] (default: every crate's src/)
       scripts/layers.py --self-test
"""

import os
import re
import sys

CRATES = ["agent/src", "api/src", "plugin/src", "webhook/src"]


def modules(src):
    """Module path (tuple) → file, for every .rs file under `src` but the
    binary root and test-only files."""
    found = {}
    for directory, _, names in os.walk(src):
        for name in names:
            if not name.endswith(".rs") or name == "main.rs":
                continue
            path = os.path.join(directory, name)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib"):
                parts = parts[:-1]
            if parts and parts[-1] == "tests":
                continue
            found[tuple(parts)] = path
    return found


def without_tests_and_comments(text):
    """The source with comments, string literals and `#[cfg(test)]` items
    removed."""
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out = []
    i = 0
    while True:
        at = text.find("#[cfg(test)]", i)
        if at < 0:
            out.append(text[i:])
            break
        out.append(text[i:at])
        j = at + len("#[cfg(test)]")
        # the item ends at its `;` or at the brace closing its first `{`
        semi = text.find(";", j)
        brace = text.find("{", j)
        if brace < 0 or (0 <= semi < brace):
            i = semi + 1
            continue
        depth = 0
        k = brace
        while k < len(text):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        i = k + 1
    return "".join(out)


def use_paths(tree):
    """Every path a `use` tree names: `a::{b, c::{d, e}}` gives a::b,
    a::c::d and a::c::e (as lists of segments)."""
    tree = re.sub(r"\s+", "", tree)

    def expand(s):
        depth = 0
        for k, ch in enumerate(s):
            if ch == "{":
                if depth == 0:
                    prefix = s[:k].rstrip(":")
                    inner = s[k + 1 : s.rindex("}")]
                    result = []
                    for part in split_top(inner):
                        for tail in expand(part):
                            result.append(([p for p in prefix.split("::") if p]) + tail)
                    return result
                depth += 1
        head = re.split(r"\bas\b", s)[0]
        return [[p for p in head.split("::") if p and p != "self"]]

    return [p for p in expand(tree) if p]


def split_top(s):
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(s):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:k])
            start = k + 1
    parts.append(s[start:])
    return [p for p in parts if p]


def resolve(segments, here, files):
    """The module (tuple) a path starting in module `here` lands in, or
    None for paths outside the crate."""
    if not segments:
        return None
    if segments[0] == "crate":
        base, rest = [], segments[1:]
    elif segments[0] in ("super", "self"):
        base = list(here)
        rest = list(segments)
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    elif tuple(list(here) + [segments[0]]) in files:
        base, rest = list(here), segments  # a child module, by its bare name
    else:
        return None
    full = base + rest
    for k in range(len(full), -1, -1):
        if tuple(full[:k]) in files:
            return tuple(full[:k])
    return None


def edges_of(files):
    edges = {m: {} for m in files}
    for module, path in files.items():
        code = without_tests_and_comments(open(path, encoding="utf-8").read())
        found = []
        for m in re.finditer(r"\buse\s+([^;]+);", code):
            found.extend(use_paths(m.group(1)))
        code_only = re.sub(r"\buse\s+[^;]+;", "", code)
        for m in re.finditer(r"\b((?:crate|super|self)(?:::\w+)+)", code_only):
            found.append(m.group(1).split("::"))
        for segments in found:
            target = resolve(segments, module, files)
            if target is not None and target != module:
                edges[module].setdefault(target, "::".join(segments))
    return edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(100000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
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
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def path_through(component, edges):
    """One cycle inside a component, as `a → b → … → a`."""
    members = set(component)
    start = min(component)
    seen, trail = {start: None}, [start]
    while trail:
        v = trail.pop(0)
        for w in sorted(edges[v]):
            if w == start:
                walk = [v]
                while seen[walk[-1]] is not None:
                    walk.append(seen[walk[-1]])
                return list(reversed(walk)) + [start]
            if w in members and w not in seen:
                seen[w] = v
                trail.append(w)
    return component


def layers(lib):
    """Top-level module → layer number, from `lib.rs`'s doc lines
    ``//! N. `a`, `b`: …``."""
    out = {}
    for line in open(lib, encoding="utf-8"):
        m = re.match(r"//!\s+(\d+)\.\s+((?:`\w+`(?:,\s*)?)+)", line)
        if m:
            for name in re.findall(r"`(\w+)`", m.group(2)):
                out[name] = int(m.group(1))
    return out


def seams(lib):
    """Module → the top-level modules allowed to import it, from `lib.rs`'s
    doc lines ``//! - `a` is imported only by `b`, `c`.``."""
    out = {}
    for line in open(lib, encoding="utf-8"):
        m = re.match(r"//!\s+-\s+`(\w+)` is imported only by (.*)", line)
        if m:
            out[m.group(1)] = set(re.findall(r"`(\w+)`", m.group(2)))
    return out


def name(module):
    return "::".join(module) or "lib"


def check(src):
    files = modules(src)
    edges = edges_of(files)
    problems = []
    for component in cycles(edges):
        walk = path_through(component, edges)
        problems.append(
            f"{src}: import cycle: " + " → ".join(name(m) for m in walk)
        )
    lib = os.path.join(src, "lib.rs")
    order = layers(lib) if os.path.exists(lib) else {}
    only = seams(lib) if os.path.exists(lib) else {}
    if order:
        tops = {m[0] for m in files if m}
        for top in sorted(tops - set(order)):
            problems.append(f"{src}: module `{top}` has no layer in lib.rs")
        for module, targets in sorted(edges.items()):
            if not module:
                continue
            for target, via in sorted(targets.items()):
                if not target or target[0] == module[0]:
                    continue
                allowed = only.get(target[0])
                if allowed is not None and module[0] not in allowed:
                    problems.append(
                        f"{src}: `{name(module)}` imports `{via}`: `{target[0]}` is imported "
                        f"only by {', '.join(sorted(allowed))}"
                    )
                a, b = order.get(module[0]), order.get(target[0])
                if a is not None and b is not None and b >= a:
                    problems.append(
                        f"{src}: `{name(module)}` (layer {a}) imports `{via}` "
                        f"(layer {b}): a module imports only from layers below its own"
                    )
    return problems


def self_test():
    """The checker on a made-up crate with one cycle, one upward import and
    one module without a layer: each must be reported."""
    import tempfile

    with tempfile.TemporaryDirectory() as src:
        sources = {
            "lib.rs": "//! 1. `low`\n//! 2. `high`\n//! 3. `top`\n//! - `low` is imported only by `high`.\n"
            "pub mod low;\npub mod high;\npub mod stray;\npub mod top;\n",
            "top.rs": "use crate::low::a::A;\nuse crate::high::Thing;\n",
            "low/mod.rs": "pub mod a;\nmod b;\nuse crate::high::Thing;\n",
            "low/a.rs": "use super::b::B;\npub struct A;\n",
            "low/b.rs": "pub struct B(super::a::A);\n",
            "high.rs": "// use crate::stray;\nuse crate::low::a::A;\npub struct Thing;\n"
            "#[cfg(test)]\nmod tests { use crate::stray; }\n",
            "stray.rs": "\n",
        }
        for rel, text in sources.items():
            os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
            with open(os.path.join(src, rel), "w", encoding="utf-8") as f:
                f.write(text)
        found = check(src)
        want = [
            "import cycle: low::a → low::b → low::a",
            "module `stray` has no layer",
            "`low` (layer 1) imports `crate::high::Thing` (layer 2)",
            "`top` imports `crate::low::a::A`: `low` is imported only by high",
        ]
        missing = [w for w in want if not any(w in p for p in found)]
        extra = [p for p in found if not any(w in p for w in want)]
        if missing or extra:
            print(f"layers self-test failed: missing {missing}, unexpected {extra}")
            return 1
    return 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    srcs = argv or [os.path.join(root, c) for c in CRATES]
    problems = [p for src in srcs for p in check(src)]
    for p in problems:
        print(p)
    if problems:
        print(f"layers: {len(problems)} problem(s)")
        return 1
    print(f"layers: {len(srcs)} crate(s), no cycle, layers point down")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
