#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

    scripts/check-module-deps.py            # every crate of the workspace
    scripts/check-module-deps.py --graph    # also print each crate's module graph

A module is a file (`foo.rs`, `foo/mod.rs`); it depends on another when its code (not its
comments, not its `#[cfg(test)]` tests) names a path into it: `crate::foo::…`, `super::…`,
`self::child::…` (a `mod child;` line alone is structure, not a dependency; `pub use
child::X` is one). Within one crate the graph of those
dependencies must have no cycle, at every level: `supervisor` must not need `client` when
`client` needs `supervisor`, and a child file must not need its parent's items when the parent
needs the child. Shared definitions go to a leaf module both import (docs/ARCHITECTURE.md,
"Module dependencies").
"""
import os
import re
import sys

CRATES = [
    "src",
    "actors/src",
    "pipelines/src",
    "whisper/src",
    "tests/mock-gladia/src",
    "tests/harness/src",
    "loadgen/src",
]

COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
STRING = re.compile(r'r#*"(?:.|\n)*?"#*|"(?:\\.|[^"\\])*"')
TESTS = re.compile(r"#\[cfg\(test\)\]\s*(?:pub\s+)?mod\s+\w+\s*\{")
MOD_DECL = re.compile(r"(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;")
PATH = re.compile(r"\b(crate|super|self)((?:::\w+)+)")


def strip(code):
    code = COMMENT.sub("", code)
    code = STRING.sub('""', code)
    match = TESTS.search(code)
    if match:
        # Test modules come last in a file (the crates' convention).
        code = code[: match.start()]
    return code


def expand_groups(code):
    """`use crate::a::{b, c::d};` → also `crate::a::b`, `crate::a::c::d` (one level of braces)."""
    out = [code]
    for m in re.finditer(r"\b((?:crate|super|self)(?:::\w+)*)::\{([^{}]*)\}", code):
        for item in m.group(2).split(","):
            item = item.strip().split(" as ")[0].strip()
            if item and item != "self":
                out.append(f" {m.group(1)}::{item} ")
    return "\n".join(out)


def modules(root):
    """Module path (tuple) → file, for every module file under `root`."""
    found = {}
    for entry in ("lib.rs", "main.rs"):
        if os.path.exists(os.path.join(root, entry)):
            found.setdefault((), os.path.join(root, entry))

    def walk(path, file):
        with open(file, encoding="utf-8") as f:
            code = strip(f.read())
        base = os.path.dirname(file)
        if not (file.endswith("mod.rs") or file.endswith("lib.rs") or file.endswith("main.rs")):
            base = os.path.join(base, os.path.basename(file)[:-3])
        for name in MOD_DECL.findall(code):
            for candidate in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
                if os.path.exists(candidate) and path + (name,) not in found:
                    found[path + (name,)] = candidate
                    walk(path + (name,), candidate)

    for top in list(found.items()):
        walk(*top)
    return found


def resolve(segments, mods):
    """The longest module prefix of a path."""
    for n in range(len(segments), -1, -1):
        if tuple(segments[:n]) in mods:
            return tuple(segments[:n])
    return ()


def graph(root):
    mods = modules(root)
    edges = {m: set() for m in mods}
    for mod, file in mods.items():
        with open(file, encoding="utf-8") as f:
            code = expand_groups(strip(f.read()))
        for kind, rest in PATH.findall(code):
            segments = [s for s in rest.split("::") if s]
            if kind == "crate":
                base = []
            elif kind == "super":
                base = list(mod[:-1])
                while segments and segments[0] == "super":
                    segments.pop(0)
                    base = base[:-1]
            else:
                base = list(mod)
            target = resolve(base + segments, mods)
            if target != mod:
                edges[mod].add(target)
        # Paths relative to this module: `child::item` (in code and in `use child::…`).
        for other in mods:
            if len(other) == len(mod) + 1 and other[: len(mod)] == mod:
                if re.search(r"(?<![\w:])" + other[-1] + r"::", code):
                    edges[mod].add(other)
    return mods, edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def name(mod):
    return "::".join(mod) or "crate"


def main():
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    show = "--graph" in sys.argv
    failed = False
    for crate in CRATES:
        root = os.path.join(top, crate)
        if not os.path.isdir(root):
            continue
        mods, edges = graph(root)
        found = cycles(edges)
        print(f"{crate}: {len(mods)} modules, {sum(len(e) for e in edges.values())} dependencies, "
              f"{len(found)} circle(s)")
        if show:
            for mod in sorted(edges):
                deps = sorted(name(d) for d in edges[mod] if d)
                print(f"  {name(mod)} -> {', '.join(deps) if deps else '(leaf)'}")
        for component in found:
            failed = True
            members = sorted(name(m) for m in component)
            print(f"  circle: {' <-> '.join(members)}")
            for m in sorted(component):
                inside = sorted(name(d) for d in edges[m] if d in component)
                print(f"    {name(m)} needs {', '.join(inside)}")
    if failed:
        print("module circles found: move the shared definitions to a leaf module", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
