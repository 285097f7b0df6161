"""A small reader of Go's text/template, as Ollama renders a Modelfile's TEMPLATE: enough of the
language (if / else if / else, range with variables, eq ne and or not len index, fields,
variables, string and number literals, trim markers) to render chat templates in tests.

It is written from the Go documentation, apart from the exporter it checks, so a template the
exporter gets wrong renders differently here."""

from __future__ import annotations

import json
import re

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+)')


def render(template: str, data: dict) -> str:
    nodes = _parse(_lex(template))
    out: list[str] = []
    _run(nodes, data, {"$": data}, data, out)
    return "".join(out)


def _lex(template: str) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        if items and items[-1][0] == "trim-next":
            items.pop()
            text = text.lstrip(" \t\r\n")
        items.append(("text", text))
        items.append(("action", m.group(2).strip()))
        if m.group(3):
            items.append(("trim-next", ""))
        pos = m.end()
    text = template[pos:]
    if items and items[-1][0] == "trim-next":
        items.pop()
        text = text.lstrip(" \t\r\n")
    items.append(("text", text))
    return items


def _parse(items, i: int = 0, stop=("end",)):
    """A list of nodes: ("text", s), ("print", expr), ("if", [(cond, body)...], else_body),
    ("range", vars, expr, body)."""
    nodes = []
    items = list(items)
    while items:
        kind, value = items.pop(0)
        if kind == "text":
            nodes.append(("text", value))
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in ("end", "else"):
            items.insert(0, (kind, value))
            return nodes, items
        if word == "if":
            branches, otherwise = [], []
            cond = value[2:].strip()
            while True:
                body, items = _parse(items)
                branches.append((cond, body))
                _, closing = items.pop(0)
                if closing.startswith("else if"):
                    cond = closing[7:].strip()
                    continue
                if closing == "else":
                    otherwise, items = _parse(items)
                    items.pop(0)  # end
                break
            nodes.append(("if", branches, otherwise))
        elif word == "range":
            spec = value[5:].strip()
            names: list[str] = []
            if ":=" in spec:
                left, spec = spec.split(":=", 1)
                names = [n.strip() for n in left.split(",")]
            body, items = _parse(items)
            items.pop(0)  # end
            nodes.append(("range", names, spec.strip(), body))
        else:
            nodes.append(("print", value))
    return nodes, items


def _run(nodes, dot, scope: dict, root, out: list[str]) -> None:
    if isinstance(nodes, tuple):
        nodes = nodes[0]
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "print":
            value = _eval(node[1], dot, scope)
            out.append("" if value is None else str(value))
        elif node[0] == "if":
            for cond, body in node[1]:
                if _truth(_eval(cond, dot, scope)):
                    _run(body, dot, scope, root, out)
                    break
            else:
                _run(node[2], dot, scope, root, out)
        elif node[0] == "range":
            names, expr, body = node[1], node[2], node[3]
            for i, item in enumerate(_eval(expr, dot, scope) or []):
                inner = dict(scope)
                if len(names) == 2:
                    inner[names[0]], inner[names[1]] = i, item
                elif names:
                    inner[names[0]] = item
                _run(body, item, inner, root, out)


def _truth(value) -> bool:
    return bool(value)


FUNCS = {
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "and": lambda *a: next((x for x in a if not _truth(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truth(x)), a[-1]),
    "not": lambda a: not _truth(a),
    "len": len,
    "index": lambda a, *keys: _index(a, keys),
}


def _index(value, keys):
    for k in keys:
        value = value[k]
    return value


def _eval(expr: str, dot, scope: dict):
    tokens = _TOKEN.findall(expr)
    value, rest = _command(tokens, dot, scope)
    if rest:
        raise ValueError(f"unexpected {rest!r} in {expr!r}")
    return value


def _command(tokens: list[str], dot, scope):
    args = []
    while tokens and tokens[0] != ")":
        tok = tokens.pop(0)
        if tok == "(":
            value, tokens = _command(tokens, dot, scope)
            tokens.pop(0)  # )
            args.append(("value", value))
        else:
            args.append(("token", tok))
    if args and args[0][0] == "token" and args[0][1] in FUNCS:
        return FUNCS[args[0][1]](*[_arg(a, dot, scope) for a in args[1:]]), tokens
    if len(args) != 1:
        raise ValueError(f"not a function: {args!r}")
    return _arg(args[0], dot, scope), tokens


def _arg(arg, dot, scope):
    kind, tok = arg
    if kind == "value":
        return tok
    if tok.startswith('"'):
        return json.loads(tok)  # Go's escapes in a quoted string are JSON's, for what templates use
    if re.fullmatch(r"-?\d+", tok):
        return int(tok)
    if tok == ".":
        return dot
    if tok.startswith("$"):
        head, _, fields = tok.partition(".")
        value = scope[head]
        return _fields(value, fields)
    if tok.startswith("."):
        return _fields(dot, tok[1:])
    raise ValueError(f"unknown {tok!r}")


def _fields(value, path: str):
    for name in filter(None, path.split(".")):
        value = value[name] if isinstance(value, dict) else getattr(value, name)
    return value
