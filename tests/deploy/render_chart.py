#!/usr/bin/env python3
"""tests/deploy/render_chart.py SILO_BINARY SOURCE_DIR

Renders the Helm chart deploy/helm/granary without Helm and checks what it
renders. Helm is not needed: this file implements the subset of Go templates
(text/template plus the few Sprig/Helm functions) the chart uses, and refuses
anything else, so the chart must stay within it (extend FUNCS below when the
chart needs more). Stricter than Helm on purpose: a value the templates use
that values.yaml does not define is an error, not an empty string.

It renders every template with values.yaml (plus the required secrets, as
`--set` would give them) and with other value sets (TLS on, more replicas,
migrate as an initContainer, an existing Secret), parses every document as
YAML (PyYAML when installed; else the small parser below, which is also
checked against PyYAML when both are there) and checks the migrate order,
the checksum annotation, probes, topology spread, selectors, that every env
var is one `silo --help` documents, that the Deployment and the migrate step
use one image, and that the silo starts with the rendered environment.

Prints one line per check ("ok   ..." / "FAIL ..."); exits 1 on any failure.
tests/deploy/check_manifests.sh runs it (and imports its YAML loader and the
probe checks for the plain manifests).
"""

import copy
import decimal
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time

try:
    if os.environ.get("GR_RENDER_NO_PYYAML"):  # exercise the fallback parser
        raise ImportError
    import yaml as pyyaml
except ImportError:
    pyyaml = None


# ---------------------------------------------------------------------------
# A YAML subset: block mappings and sequences, flow collections on one line,
# plain, single- and double-quoted scalars, comments; scalars resolved as
# YAML 1.1 (as PyYAML and Kubernetes do). Anything else (block scalars,
# anchors, tags, multi-line plain or flow scalars) is an error.

class YamlError(Exception):
    pass


_Y_INT = re.compile(r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+
    |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$""", re.X)
_Y_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_Y_TIMESTAMP = re.compile(r"^[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?")
_Y_TRUE = {"yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_Y_FALSE = {"no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
_Y_NULL = {"", "~", "null", "Null", "NULL"}


def _sexagesimal(s, conv):
    sign = -1 if s.startswith("-") else 1
    s = s.lstrip("+-")
    v = 0
    for part in s.split(":"):
        v = v * 60 + conv(part)
    return sign * v


def yaml_resolve(s):
    """A plain scalar's value, as PyYAML's safe loader resolves it."""
    if s in _Y_NULL:
        return None
    if s in _Y_TRUE:
        return True
    if s in _Y_FALSE:
        return False
    if _Y_INT.match(s):
        t = s.replace("_", "")
        if ":" in t:
            return _sexagesimal(t, int)
        sign = -1 if t.startswith("-") else 1
        t = t.lstrip("+-")
        if t.startswith("0b"):
            return sign * int(t[2:], 2)
        if t.startswith("0x"):
            return sign * int(t[2:], 16)
        if t != "0" and t.startswith("0"):
            return sign * int(t, 8)
        return sign * int(t)
    if _Y_FLOAT.match(s):
        t = s.replace("_", "").lower()
        if t.endswith(".inf"):
            return -math.inf if t.startswith("-") else math.inf
        if t.endswith(".nan"):
            return math.nan
        if ":" in t:
            return _sexagesimal(t, float)
        return float(t)
    if _Y_TIMESTAMP.match(s):
        raise YamlError(f"timestamp {s!r}: quote it (unsupported here)")
    if s in ("=", "<<"):
        raise YamlError(f"{s!r}: value/merge keys unsupported")
    return s


def _strip_comment(s):
    q = None
    i = 0
    while i < len(s):
        c = s[i]
        if q == '"':
            if c == "\\":
                i += 2
                continue
            if c == '"':
                q = None
        elif q == "'":
            if c == "'":
                if s[i + 1:i + 2] == "'":
                    i += 2
                    continue
                q = None
        else:
            if c == "#" and (i == 0 or s[i - 1] in " \t"):
                return s[:i].rstrip()
            if c in "\"'" and (i == 0 or s[i - 1] in " \t[{,"):
                q = c
        i += 1
    return s.rstrip()


_Y_ESC = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f",
          "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85",
          "_": "\xa0", "L": "\u2028", "P": "\u2029"}


class _YamlDoc:
    def __init__(self, text, name):
        self.name = name
        self.lines = []
        for no, raw in enumerate(text.split("\n"), 1):
            body = raw.lstrip(" ")
            if body.startswith("\t"):
                self.err(no, "tab in indentation")
            content = _strip_comment(body)
            if not content:
                continue
            if content in ("---", "...") or content.startswith("%") or content.startswith("--- "):
                self.err(no, "document markers or directives inside a document")
            self.lines.append([len(raw) - len(body), content, no])

    def err(self, no, msg):
        raise YamlError(f"{self.name}:{no}: {msg}")

    def parse(self):
        if not self.lines:
            return None
        v, i = self.block(0, self.lines[0][0])
        if i != len(self.lines):
            self.err(self.lines[i][2], "unexpected indentation or content")
        return v

    @staticmethod
    def is_seq(content):
        return content == "-" or content.startswith("- ")

    def block(self, i, ind):
        content, no = self.lines[i][1], self.lines[i][2]
        if self.is_seq(content):
            return self.seq(i, ind)
        if self.key_split(content, no) is not None:
            return self.mapping(i, ind)
        return self.inline(content, no), i + 1

    def mapping(self, i, ind):
        out = {}
        while i < len(self.lines):
            lind, content, no = self.lines[i]
            if lind < ind:
                break
            if lind > ind:
                self.err(no, "bad indentation (multi-line scalars are unsupported)")
            if self.is_seq(content):
                self.err(no, "a sequence item where a mapping key was expected")
            ks = self.key_split(content, no)
            if ks is None:
                self.err(no, f"expected 'key: value', got {content!r}")
            key, rest = ks
            i += 1
            if rest == "":
                nxt = self.lines[i] if i < len(self.lines) else None
                if nxt and (nxt[0] > ind or (nxt[0] == ind and self.is_seq(nxt[1]))):
                    val, i = self.block(i, nxt[0])
                else:
                    val = None
            else:
                val = self.inline(rest, no)
            if key in out:
                self.err(no, f"duplicate key {key!r}")
            out[key] = val
        return out, i

    def seq(self, i, ind):
        out = []
        while i < len(self.lines):
            lind, content, no = self.lines[i]
            if lind < ind:
                break
            if lind > ind:
                self.err(no, "bad indentation in a sequence")
            if not self.is_seq(content):
                break
            rest = content[1:]
            stripped = rest.lstrip(" ")
            if stripped == "":
                i += 1
                if i < len(self.lines) and self.lines[i][0] > ind:
                    val, i = self.block(i, self.lines[i][0])
                else:
                    val = None
            else:
                sub = ind + 1 + (len(rest) - len(stripped))
                self.lines[i] = [sub, stripped, no]
                val, i = self.block(i, sub)
            out.append(val)
        return out, i

    def key_split(self, s, no):
        if s[0] in "\"'":
            val, end = self.quoted(s, 0, no)
            rest = s[end:]
            if rest.startswith(":") and (len(rest) == 1 or rest[1] == " "):
                return val, rest[1:].strip()
            return None
        if s[0] in "[{":
            return None
        if s.startswith("? "):
            self.err(no, "complex keys unsupported")
        for k, c in enumerate(s):
            if c == ":" and (k + 1 == len(s) or s[k + 1] == " "):
                key = s[:k].rstrip()
                if not key:
                    self.err(no, "empty key")
                return self.plain(key, no), s[k + 1:].strip()
        return None

    def plain(self, text, no):
        if text[0] in "&*!|>%@`" or (text[0] in "-?:" and (len(text) == 1 or text[1] == " ")):
            self.err(no, f"unsupported or invalid plain scalar {text!r}")
        try:
            return yaml_resolve(text)
        except YamlError as e:
            self.err(no, str(e))

    def inline(self, s, no):
        c = s[0]
        if c in "[{":
            v, end = self.flow(s, 0, no)
            if s[end:].strip():
                self.err(no, f"trailing {s[end:]!r} after a flow collection")
            return v
        if c in "\"'":
            v, end = self.quoted(s, 0, no)
            if s[end:].strip():
                self.err(no, f"trailing {s[end:]!r} after a quoted scalar")
            return v
        if c in "|>":
            self.err(no, "block scalars unsupported")
        if ": " in s or s.endswith(":"):
            self.err(no, f"mapping values are not allowed here: {s!r}")
        return self.plain(s, no)

    def quoted(self, s, p, no):
        q = s[p]
        out = []
        i = p + 1
        while True:
            if i >= len(s):
                self.err(no, "unterminated quoted scalar (multi-line scalars are unsupported)")
            c = s[i]
            if q == "'":
                if c == "'":
                    if s[i + 1:i + 2] == "'":
                        out.append("'")
                        i += 2
                        continue
                    return "".join(out), i + 1
                out.append(c)
                i += 1
                continue
            if c == '"':
                return "".join(out), i + 1
            if c == "\\":
                e = s[i + 1:i + 2]
                if e in _Y_ESC:
                    out.append(_Y_ESC[e])
                    i += 2
                    continue
                width = {"x": 2, "u": 4, "U": 8}.get(e)
                if width is None:
                    self.err(no, f"unknown escape \\{e}")
                out.append(chr(int(s[i + 2:i + 2 + width], 16)))
                i += 2 + width
                continue
            out.append(c)
            i += 1

    def flow(self, s, p, no):
        close = "]" if s[p] == "[" else "}"
        out = [] if close == "]" else {}
        p += 1
        while True:
            p = self.skip(s, p, no)
            if s[p] == close:
                return out, p + 1
            if close == "]":
                v, p = self.flow_node(s, p, no)
                out.append(v)
            else:
                k, p = self.flow_node(s, p, no)
                p = self.skip(s, p, no)
                v = None
                if s[p] == ":":
                    p = self.skip(s, p + 1, no)
                    if s[p] not in ",}":
                        v, p = self.flow_node(s, p, no)
                if k in out:
                    self.err(no, f"duplicate key {k!r}")
                out[k] = v
            p = self.skip(s, p, no)
            if s[p] == ",":
                p += 1
            elif s[p] != close:
                self.err(no, f"expected ',' or {close!r} in a flow collection")

    def skip(self, s, p, no):
        while p < len(s) and s[p] == " ":
            p += 1
        if p >= len(s):
            self.err(no, "unclosed flow collection (multi-line flow is unsupported)")
        return p

    def flow_node(self, s, p, no):
        c = s[p]
        if c in "[{":
            return self.flow(s, p, no)
        if c in "\"'":
            return self.quoted(s, p, no)
        q = p
        while q < len(s):
            ch = s[q]
            if ch in ",[]{}":
                break
            if ch == ":" and (q + 1 >= len(s) or s[q + 1] in " ,[]{}"):
                break
            q += 1
        text = s[p:q].rstrip()
        if not text:
            self.err(no, "empty flow entry")
        return self.plain(text, no), q


def split_documents(text):
    """Documents of a stream: split on lines that are `---`."""
    docs, cur = [], []
    for line in text.split("\n"):
        if re.match(r"^---\s*$", line):
            docs.append("\n".join(cur))
            cur = []
        elif line.startswith("---"):
            raise YamlError(f"content after a document marker: {line!r}")
        else:
            cur.append(line)
    docs.append("\n".join(cur))
    return docs


def mini_load(text, name="<yaml>"):
    return _YamlDoc(text, name).parse()


def load_yaml(text, name="<yaml>"):
    """One document: PyYAML's safe loader when installed, else mini_load."""
    if pyyaml is not None:
        return pyyaml.safe_load(text)
    return mini_load(text, name)


# ---------------------------------------------------------------------------
# toYaml: Helm marshals through JSON then go-yaml v2: sorted keys, block
# style, sequences not indented under their key, strings quoted when they
# would read as something else.

_NEEDS_QUOTE_START = set("-?:,[]{}#&*!|>'\"%@` \t")


def _yaml_str(s):
    plain_ok = (s != "" and s[0] not in _NEEDS_QUOTE_START and s[-1] not in " \t:"
                and ": " not in s and " #" not in s and "\n" not in s
                and all(c.isprintable() for c in s) and s not in ("y", "Y", "n", "N"))
    if plain_ok:
        try:
            plain_ok = isinstance(yaml_resolve(s), str)
        except YamlError:
            plain_ok = False
    return s if plain_ok else json.dumps(s, ensure_ascii=False)


def _yaml_scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v == int(v) and abs(v) < 1e21:
            return str(int(v))
        return repr(v)
    if isinstance(v, str):
        return _yaml_str(v)
    raise TplError(f"toYaml: cannot marshal {type(v).__name__}")


def _yaml_lines(v):
    if isinstance(v, dict):
        if not v:
            return ["{}"]
        lines = []
        for k in sorted(v, key=str):
            key = _yaml_str(str(k))
            val = v[k]
            if isinstance(val, dict) and val:
                lines.append(key + ":")
                lines += ["  " + l for l in _yaml_lines(val)]
            elif isinstance(val, list) and val:
                lines.append(key + ":")
                lines += _yaml_lines(val)
            else:
                lines.append(key + ": " + _yaml_lines(val)[0])
        return lines
    if isinstance(v, list):
        if not v:
            return ["[]"]
        lines = []
        for item in v:
            sub = _yaml_lines(item)
            lines.append("- " + sub[0])
            lines += ["  " + l for l in sub[1:]]
        return lines
    return [_yaml_scalar(v)]


def to_yaml(v):
    return "\n".join(_yaml_lines(v))


# ---------------------------------------------------------------------------
# Go templates: lexer, parser, evaluator.

class TplError(Exception):
    pass


WS = " \t\r\n"
KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}


def lex(src, name):
    """Text and action items of a template, with {{- and -}} trimming applied."""
    items = []
    i, line, n = 0, 1, len(src)
    trim_next = False
    while True:
        j = src.find("{{", i)
        text = src[i:] if j < 0 else src[i:j]
        if trim_next:
            text = text.lstrip(WS)
        if j < 0:
            if text:
                items.append(("text", text, line))
            return items
        k = j + 2
        if src[k:k + 1] == "-" and src[k + 1:k + 2] in tuple(WS):
            text = text.rstrip(WS)
            k += 2
        if text:
            items.append(("text", text, line))
        line += src.count("\n", i, j)
        start = line
        p = k
        while True:
            if p >= n:
                raise TplError(f"{name}:{start}: unclosed action")
            c = src[p]
            if c in "\"'":
                q = p + 1
                while q < n and src[q] != c:
                    if src[q] == "\n":
                        raise TplError(f"{name}:{start}: unterminated quoted string")
                    q += 2 if src[q] == "\\" else 1
                p = q + 1
                continue
            if c == "`":
                q = src.find("`", p + 1)
                if q < 0:
                    raise TplError(f"{name}:{start}: unterminated raw string")
                p = q + 1
                continue
            if src.startswith("/*", p):
                q = src.find("*/", p + 2)
                if q < 0:
                    raise TplError(f"{name}:{start}: unclosed comment")
                p = q + 2
                continue
            if src.startswith("}}", p):
                break
            p += 1
        body = src[k:p]
        trim_next = len(body) >= 2 and body[-1] == "-" and body[-2] in WS
        if trim_next:
            body = body[:-2]
        if body.lstrip(WS).startswith("/*"):
            # Go accepts only {{/* ... */}} and {{- /* ... */ -}}.
            if not (body.startswith("/*") and body.endswith("*/")):
                raise TplError(f"{name}:{start}: write comments as {{{{/* ... */}}}} or {{{{- /* ... */ -}}}}")
        else:
            items.append(("action", body, start))
        line += src.count("\n", j, p + 2)
        i = p + 2


def _go_string(s, p, where):
    out = []
    i = p + 1
    esc = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
    while i < len(s):
        c = s[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            e = s[i + 1:i + 2]
            if e in esc:
                out.append(esc[e])
                i += 2
                continue
            width = {"x": 2, "u": 4, "U": 8}.get(e)
            if width is None:
                raise TplError(f"{where}: unsupported escape \\{e}")
            out.append(chr(int(s[i + 2:i + 2 + width], 16)))
            i += 2 + width
            continue
        out.append(c)
        i += 1
    raise TplError(f"{where}: unterminated string")


def tokenize(body, where):
    toks = []
    p, n = 0, len(body)
    ident = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
    number = re.compile(r"[-+]?(?:0x[0-9a-fA-F]+|[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+)")

    def add(kind, val=None, end=None):
        toks.append({"kind": kind, "val": val, "start": p0, "end": end})

    while p < n:
        c = body[p]
        p0 = p
        if c in WS:
            p += 1
            continue
        if c in "|(),":
            add({"|": "pipe", "(": "lparen", ")": "rparen", ",": "comma"}[c], end=p + 1)
            p += 1
        elif body.startswith(":=", p):
            add("decl", end=p + 2)
            p += 2
        elif c == "=":
            add("assign", end=p + 1)
            p += 1
        elif c == '"':
            v, p = _go_string(body, p, where)
            add("lit", v, p)
        elif c == "`":
            q = body.find("`", p + 1)
            add("lit", body[p + 1:q], q + 1)
            p = q + 1
        elif c == "'":
            raise TplError(f"{where}: character literals are unsupported")
        elif c == "." and (p + 1 >= n or not (body[p + 1].isalnum() or body[p + 1] == "_")):
            add("field", [], p + 1)
            p += 1
        elif c == "." and not body[p + 1].isdigit():
            chain = []
            while p < n and body[p] == ".":
                m = ident.match(body, p + 1)
                if not m:
                    raise TplError(f"{where}: bad field name at {body[p:]!r}")
                chain.append(m.group())
                p = m.end()
            add("field", chain, p)
        elif c == "$":
            m = ident.match(body, p + 1)
            name = "$" + (m.group() if m else "")
            p = m.end() if m else p + 1
            chain = []
            while p < n and body[p] == "." and p + 1 < n and (body[p + 1].isalpha() or body[p + 1] == "_"):
                m = ident.match(body, p + 1)
                chain.append(m.group())
                p = m.end()
            add("var", (name, chain), p)
        elif c.isdigit() or (c in "+-." and p + 1 < n and body[p + 1].isdigit()):
            m = number.match(body, p)
            text = m.group()
            p = m.end()
            if re.fullmatch(r"[-+]?[0-9]+", text):
                v = int(text)
            elif text.lower().lstrip("+-").startswith("0x"):
                v = int(text, 16)
            else:
                v = float(text)
            add("lit", v, p)
        elif c.isalpha() or c == "_":
            m = ident.match(body, p)
            p = m.end()
            word = m.group()
            if word in ("true", "false"):
                add("lit", word == "true", p)
            elif word == "nil":
                add("lit", None, p)
            else:
                add("ident", word, p)
        else:
            raise TplError(f"{where}: unexpected {c!r} in action")
    return toks


class _PipeParser:
    def __init__(self, toks, where):
        self.toks, self.i, self.where = toks, 0, where

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self):
        t = self.peek()
        if t is None:
            raise TplError(f"{self.where}: unexpected end of action")
        self.i += 1
        return t

    def pipeline(self, allow_decl, in_range=False):
        decl, op = [], None
        t = self.toks
        i = self.i
        if allow_decl and i < len(t) and t[i]["kind"] == "var" and not t[i]["val"][1]:
            if i + 1 < len(t) and t[i + 1]["kind"] in ("decl", "assign"):
                decl, op = [t[i]["val"][0]], t[i + 1]["kind"]
                self.i += 2
            elif (in_range and i + 3 < len(t) and t[i + 1]["kind"] == "comma" and t[i + 2]["kind"] == "var"
                  and t[i + 3]["kind"] == "decl"):
                decl, op = [t[i]["val"][0], t[i + 2]["val"][0]], "decl"
                self.i += 4
        cmds = [self.command()]
        while self.peek() is not None and self.peek()["kind"] == "pipe":
            self.next()
            cmds.append(self.command())
        return {"decl": decl, "op": op, "cmds": cmds, "where": self.where}

    def command(self):
        args = []
        while self.peek() is not None and self.peek()["kind"] not in ("pipe", "rparen"):
            args.append(self.operand())
        if not args:
            raise TplError(f"{self.where}: empty command")
        return args

    def operand(self):
        t = self.next()
        k = t["kind"]
        if k == "lparen":
            inner = self.pipeline(allow_decl=False)
            close = self.next()
            if close["kind"] != "rparen":
                raise TplError(f"{self.where}: expected ')'")
            node = ("paren", inner)
            nxt = self.peek()
            if nxt is not None and nxt["kind"] == "field" and nxt["start"] == close["end"] and nxt["val"]:
                self.next()
                node = ("chain", node, nxt["val"])
            return node
        if k == "field":
            return ("field", t["val"])
        if k == "var":
            return ("var", t["val"][0], t["val"][1])
        if k == "lit":
            return ("lit", t["val"])
        if k == "ident":
            if t["val"] in KEYWORDS:
                raise TplError(f"{self.where}: unexpected keyword {t['val']}")
            return ("ident", t["val"])
        raise TplError(f"{self.where}: unexpected {k}")

    def done(self):
        if self.peek() is not None:
            raise TplError(f"{self.where}: unexpected {self.peek()['kind']} after the pipeline")


def parse_action(body, where):
    toks = tokenize(body, where)
    if not toks:
        raise TplError(f"{where}: empty action")
    first = toks[0]
    if first["kind"] == "ident" and first["val"] in KEYWORDS:
        kw = first["val"]
        p = _PipeParser(toks[1:], where)
        if kw == "end":
            p.done()
            return ("end",)
        if kw == "else":
            if not toks[1:]:
                return ("else", None, None)
            sub = toks[1]
            if sub["kind"] == "ident" and sub["val"] in ("if", "with"):
                p = _PipeParser(toks[2:], where)
                pipe = p.pipeline(allow_decl=True)
                p.done()
                return ("else", sub["val"], pipe)
            raise TplError(f"{where}: else takes nothing, `if ...` or `with ...`")
        if kw in ("if", "with", "range"):
            pipe = p.pipeline(allow_decl=True, in_range=kw == "range")
            p.done()
            return (kw, pipe)
        if kw in ("define", "template"):
            if len(toks) < 2 or toks[1]["kind"] != "lit" or not isinstance(toks[1]["val"], str):
                raise TplError(f"{where}: {kw} needs a quoted name")
            name = toks[1]["val"]
            if kw == "define":
                if len(toks) != 2:
                    raise TplError(f"{where}: define takes only a name")
                return ("define", name)
            pipe = None
            if len(toks) > 2:
                p = _PipeParser(toks[2:], where)
                pipe = p.pipeline(allow_decl=False)
                p.done()
            return ("template", name, pipe)
        raise TplError(f"{where}: {kw} is unsupported here")
    p = _PipeParser(toks, where)
    pipe = p.pipeline(allow_decl=True)
    p.done()
    return ("action", pipe)


def parse_template(src, name, defines):
    """Nodes of a template file; its {{define}}s go into `defines`."""
    items = [(kind, val, line) for kind, val, line in lex(src, name)]
    pos = [0]

    def parse_list(stops):
        nodes = []
        while pos[0] < len(items):
            kind, val, line = items[pos[0]]
            pos[0] += 1
            if kind == "text":
                nodes.append(("text", val))
                continue
            where = f"{name}:{line}"
            act = parse_action(val, where)
            tag = act[0]
            if tag in ("end", "else"):
                if tag not in stops:
                    raise TplError(f"{where}: unexpected {{{{{tag}}}}}")
                return nodes, act, where
            if tag == "action":
                nodes.append(("action", act[1]))
            elif tag == "template":
                nodes.append(("template", act[1], act[2], where))
            elif tag == "define":
                body, term, _ = parse_list({"end"})
                if term is None:
                    raise TplError(f"{where}: define without end")
                defines[act[1]] = body
            else:
                nodes.append(parse_control(tag, act[1], where))
        if stops:
            raise TplError(f"{name}: missing {{{{end}}}}")
        return nodes, None, None

    def parse_control(tag, pipe, where):
        body, term, twhere = parse_list({"end", "else"})
        else_body = []
        if term[0] == "else":
            if term[1] is None:
                else_body, term2, _ = parse_list({"end"})
            else:
                else_body = [parse_control(term[1], term[2], twhere)]
        return (tag, pipe, body, else_body, where)

    nodes, _, _ = parse_list(set())
    return nodes


def truth(v):
    if v is None or v is False:
        return False
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v != 0
    if isinstance(v, (str, list, dict)):
        return len(v) > 0
    return True


def go_float(f):
    """fmt's %v of a float64 (Helm reads every number in values as one)."""
    if f != f:
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "0"
    sign, digits, exp = decimal.Decimal(repr(f)).as_tuple()
    digits = list(digits)
    while len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        exp += 1
    nd = len(digits)
    dp = nd + exp
    ds = "".join(map(str, digits))
    s = "-" if sign else ""
    e = dp - 1
    if e < -4 or e >= 6:  # %v is %g with the shortest digits; %e from exponent 6 (1e+06)
        mant = ds[0] + ("." + ds[1:] if nd > 1 else "")
        return f"{s}{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if dp <= 0:
        return s + "0." + "0" * (-dp) + ds
    if dp >= nd:
        return s + ds + "0" * (dp - nd)
    return s + ds[:dp] + "." + ds[dp:]


def go_quote(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                        "\v": "\\v"}[ch])
        elif o < 0x20 or o == 0x7f:
            out.append(f"\\x{o:02x}")
        elif o < 0x80 or ch.isprintable():
            out.append(ch)
        elif o <= 0xffff:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def strval(v, where):
    """Sprig's strval: what quote, print and %v make of a value."""
    if isinstance(v, str):
        return v
    if v is None:
        raise TplError(f"{where}: nil where a string was expected")
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v)
    raise TplError(f"{where}: a {type(v).__name__} where a string was expected (use toYaml)")


def to_int64(v, where):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v)
    if isinstance(v, str):
        try:
            return int(v, 0) if re.fullmatch(r"[-+]?(0x[0-9a-fA-F]+|[0-9]+)", v) else int(float(v))
        except ValueError:
            return 0
    if v is None:
        return 0
    raise TplError(f"{where}: cannot convert {type(v).__name__} to an integer")


def go_printf(fmt, args, where):
    out, ai, i = [], 0, 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        verb = fmt[i + 1:i + 2]
        i += 2
        if verb == "%":
            out.append("%")
            continue
        if verb not in ("s", "d", "v", "q"):
            raise TplError(f"{where}: printf verb %{verb} unsupported (use %s, %d, %v, %q)")
        if ai >= len(args):
            raise TplError(f"{where}: printf: missing argument for %{verb}")
        a = args[ai]
        ai += 1
        if verb == "s":
            if not isinstance(a, str):
                raise TplError(f"{where}: printf %s of a {type(a).__name__} (Go prints %!s(...))")
            out.append(a)
        elif verb == "d":
            if isinstance(a, bool) or not isinstance(a, int):
                raise TplError(f"{where}: printf %d of a {type(a).__name__} (values are float64: "
                               f"use int64 or %v)")
            out.append(str(a))
        elif verb == "v":
            out.append(strval(a, where))
        else:
            out.append(go_quote(strval(a, where)))
    if ai != len(args):
        raise TplError(f"{where}: printf: {len(args) - ai} extra argument(s)")
    return "".join(out)


def go_print(args, where):
    """fmt.Sprint: a space between two operands when neither is a string."""
    out = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(strval(a, where))
    return "".join(out)


def _empty(v):
    return not truth(v)


def _cmp_args(a, b, where):
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        if type(a) is not type(b):
            raise TplError(f"{where}: incompatible types for comparison")
    elif isinstance(a, num) and isinstance(b, num):
        return a, b
    elif a is not None and b is not None and type(a) is not type(b):
        raise TplError(f"{where}: incompatible types for comparison ({type(a).__name__}, "
                       f"{type(b).__name__})")
    return a, b


def _required(where, msg, v):
    if v is None or (isinstance(v, str) and v == ""):
        raise TplError(f"{where}: required: {msg}")
    return v


def _trunc(where, n, s):
    n = to_int64(n, where)
    s = strval(s, where)
    if n < 0 and len(s) + n > 0:
        return s[len(s) + n:]
    if n >= 0 and len(s) > n:
        return s[:n]
    return s


def _indent(where, n, s):
    pad = " " * to_int64(n, where)
    return pad + strval(s, where).replace("\n", "\n" + pad)


def _div(where, a, b):
    a, b = to_int64(a, where), to_int64(b, where)
    if b == 0:
        raise TplError(f"{where}: division by zero")
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _fail(where, msg):
    raise TplError(f"{where}: fail: {msg}")


def _eq(where, a, *bs):
    if not bs:
        raise TplError(f"{where}: eq needs two arguments")
    return any(x == y for x, y in (_cmp_args(a, b, where) for b in bs))


# name -> f(where, *args). `include` is handled by the engine.
FUNCS = {
    "default": lambda w, d, *given: d if not given or _empty(given[0]) else given[0],
    "required": _required,
    "fail": _fail,
    "quote": lambda w, *a: " ".join(go_quote(strval(x, w)) for x in a if x is not None),
    "squote": lambda w, *a: " ".join("'" + strval(x, w) + "'" for x in a if x is not None),
    "toYaml": lambda w, v: to_yaml(v),
    "indent": _indent,
    "nindent": lambda w, n, s: "\n" + _indent(w, n, s),
    "sha256sum": lambda w, s: hashlib.sha256(strval(s, w).encode()).hexdigest(),
    "printf": lambda w, f, *a: go_printf(strval(f, w), a, w),
    "print": lambda w, *a: go_print(a, w),
    "trunc": _trunc,
    "trimSuffix": lambda w, suf, s: (lambda s, suf: s[:-len(suf)] if suf and s.endswith(suf) else s)(
        strval(s, w), strval(suf, w)),
    "toString": lambda w, v: strval(v, w),
    "int": lambda w, v: to_int64(v, w),
    "int64": lambda w, v: to_int64(v, w),
    "add": lambda w, *a: sum(to_int64(x, w) for x in a),
    "sub": lambda w, a, b: to_int64(a, w) - to_int64(b, w),
    "mul": lambda w, a, *b: math.prod([to_int64(a, w)] + [to_int64(x, w) for x in b]),
    "div": _div,
    "not": lambda w, v: not truth(v),
    "eq": _eq,
    "ne": lambda w, a, b: (lambda x, y: x != y)(*_cmp_args(a, b, w)),
    "lt": lambda w, a, b: (lambda x, y: x < y)(*_cmp_args(a, b, w)),
    "le": lambda w, a, b: (lambda x, y: x <= y)(*_cmp_args(a, b, w)),
    "gt": lambda w, a, b: (lambda x, y: x > y)(*_cmp_args(a, b, w)),
    "ge": lambda w, a, b: (lambda x, y: x >= y)(*_cmp_args(a, b, w)),
}


class Engine:
    """Named templates (every file and every define) and their execution."""

    def __init__(self):
        self.templates = {}

    def add_file(self, name, src):
        self.templates[name] = parse_template(src, name, self.templates)

    def execute(self, name, data):
        if name not in self.templates:
            raise TplError(f"no template {name!r}")
        out = []
        self.run(self.templates[name], data, [("$", data)], out, 0)
        return "".join(out)

    def run(self, nodes, dot, scope, out, depth):
        for node in nodes:
            tag = node[0]
            if tag == "text":
                out.append(node[1])
            elif tag == "action":
                v = self.pipe(node[1], dot, scope, depth)
                if not node[1]["decl"]:
                    if v is None:
                        raise TplError(f"{node[1]['where']}: prints nil (Helm would print \"\" or <no value>)")
                    out.append(strval(v, node[1]["where"]))
            elif tag == "template":
                data = self.pipe(node[2], dot, scope, depth) if node[2] else None
                out.append(self.include(node[1], data, depth, node[3]))
            elif tag in ("if", "with"):
                mark = len(scope)
                v = self.pipe(node[1], dot, scope, depth)
                # A variable declared in the condition lives until {{end}}.
                if truth(v):
                    self.run(node[2], v if tag == "with" else dot, scope, out, depth)
                else:
                    self.run(node[3], dot, scope, out, depth)
                del scope[mark:]
            elif tag == "range":
                mark = len(scope)
                pipe = node[1]
                decl = pipe["decl"]
                plain = dict(pipe, decl=[], op=None)
                v = self.pipe(plain, dot, scope, depth)
                if isinstance(v, dict):
                    pairs = [(k, v[k]) for k in sorted(v)]
                elif isinstance(v, list):
                    pairs = list(enumerate(v))
                elif v is None:
                    pairs = []
                else:
                    raise TplError(f"{pipe['where']}: range over a {type(v).__name__}")
                for k, item in pairs:
                    if len(decl) == 1:
                        scope.append((decl[0], item))
                    elif len(decl) == 2:
                        scope += [(decl[0], k), (decl[1], item)]
                    self.run(node[2], item, scope, out, depth)
                    del scope[mark:]
                if not pairs:
                    self.run(node[3], dot, scope, out, depth)
                    del scope[mark:]
            else:
                raise TplError(f"internal: node {tag}")

    def include(self, name, data, depth, where):
        if depth > 100:
            raise TplError(f"{where}: include nested too deep")
        if name not in self.templates:
            raise TplError(f"{where}: no template {name!r}")
        out = []
        self.run(self.templates[name], data, [("$", data)], out, depth + 1)
        return "".join(out)

    def pipe(self, pipe, dot, scope, depth):
        where = pipe["where"]
        val, have = None, False
        for cmd in pipe["cmds"]:
            val = self.command(cmd, dot, scope, depth, where, val, have)
            have = True
        if pipe["decl"]:
            name = pipe["decl"][0]
            if pipe["op"] == "decl":
                scope.append((name, val))
            else:
                for idx in range(len(scope) - 1, -1, -1):
                    if scope[idx][0] == name:
                        scope[idx] = (name, val)
                        break
                else:
                    raise TplError(f"{where}: undefined variable {name}")
        return val

    def command(self, cmd, dot, scope, depth, where, piped, have_piped):
        head = cmd[0]
        if head[0] == "ident":
            name = head[1]
            args = [self.arg(a, dot, scope, depth, where) for a in cmd[1:]]
            if have_piped:
                args.append(piped)
            if name == "include":
                if len(args) != 2 or not isinstance(args[0], str):
                    raise TplError(f"{where}: include NAME DATA")
                return self.include(args[0], args[1], depth, where)
            if name == "and":
                for a in args:
                    if not truth(a):
                        return a
                return args[-1]
            if name == "or":
                for a in args:
                    if truth(a):
                        return a
                return args[-1]
            fn = FUNCS.get(name)
            if fn is None:
                raise TplError(f"{where}: function {name!r} is not implemented by render_chart.py "
                               f"(keep the chart to: include, and, or, {', '.join(sorted(FUNCS))})")
            try:
                return fn(where, *args)
            except TypeError as e:
                raise TplError(f"{where}: {name}: wrong number of arguments ({e})")
        if len(cmd) > 1:
            raise TplError(f"{where}: cannot give arguments to a non-function")
        if have_piped:
            raise TplError(f"{where}: cannot pipe into a non-function")
        return self.arg(head, dot, scope, depth, where)

    def arg(self, node, dot, scope, depth, where):
        tag = node[0]
        if tag == "lit":
            return node[1]
        if tag == "field":
            return self.walk(dot, node[1], where, ".")
        if tag == "var":
            for name, v in reversed(scope):
                if name == node[1]:
                    return self.walk(v, node[2], where, node[1])
            raise TplError(f"{where}: undefined variable {node[1]}")
        if tag == "paren":
            return self.pipe(node[1], dot, scope, depth)
        if tag == "chain":
            return self.walk(self.arg(node[1], dot, scope, depth, where), node[2], where, "(...)")
        if tag == "ident":
            return self.command([node], dot, scope, depth, where, None, False)
        raise TplError(f"{where}: internal: operand {tag}")

    @staticmethod
    def walk(v, chain, where, base):
        path = base
        for f in chain:
            path = path.rstrip(".") + "." + f
            if not isinstance(v, dict):
                raise TplError(f"{where}: {path}: cannot take field {f} of a {type(v).__name__}")
            if f not in v:
                raise TplError(f"{where}: missing value {path} (define it in values.yaml)")
            v = v[f]
        return v


# ---------------------------------------------------------------------------
# Helm's side: values, the release, the chart, rendering every file.

def floatify(v):
    """Helm reads values through JSON: every number is a float64."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, dict):
        return {k: floatify(x) for k, x in v.items()}
    if isinstance(v, list):
        return [floatify(x) for x in v]
    raise TplError(f"values: unsupported {type(v).__name__}")


def merge_values(base, over):
    """Like `-f` over the chart's values: maps merge, null deletes, the rest replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_values(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class Chart:
    def __init__(self, chart_dir):
        self.dir = chart_dir
        with open(os.path.join(chart_dir, "Chart.yaml")) as f:
            self.meta = load_yaml(f.read(), "Chart.yaml")
        with open(os.path.join(chart_dir, "values.yaml")) as f:
            self.values_text = f.read()
        self.values = load_yaml(self.values_text, "values.yaml") or {}
        self.name = self.meta["name"]
        self.files = {}
        tdir = os.path.join(chart_dir, "templates")
        for root, _, names in os.walk(tdir):
            for n in sorted(names):
                path = os.path.join(root, n)
                rel = os.path.relpath(path, chart_dir).replace(os.sep, "/")
                with open(path) as f:
                    self.files[f"{self.name}/{rel}"] = f.read()

    def render(self, overrides=None, release=None):
        """{template path: rendered text} of every file not starting with _."""
        rel = {"Name": "g", "Namespace": "granary", "Revision": 1, "IsInstall": True, "IsUpgrade": False,
               "Service": "Helm"}
        rel.update(release or {})
        values = floatify(merge_values(self.values, overrides or {}))
        chart = {"Name": self.meta["name"], "Version": str(self.meta["version"]),
                 "AppVersion": str(self.meta.get("appVersion", "")),
                 "Description": self.meta.get("description", ""), "Type": self.meta.get("type", "application"),
                 "APIVersion": self.meta["apiVersion"]}
        eng = Engine()
        for name, src in sorted(self.files.items()):
            eng.add_file(name, src)
        out = {}
        base = f"{self.name}/templates"
        for name in sorted(self.files):
            if os.path.basename(name).startswith("_") or not name.endswith((".yaml", ".yml", ".tpl")):
                continue
            top = {"Values": values, "Release": rel, "Chart": chart,
                   "Template": {"Name": name, "BasePath": base}}
            out[name] = eng.execute(name, top)
        return out


def documents(rendered):
    """[(template, index, object)] of every non-empty rendered document."""
    docs = []
    for name, text in sorted(rendered.items()):
        for i, d in enumerate(split_documents(text)):
            if not d.strip():
                continue
            docs.append((name, i, d))
    return docs


# ---------------------------------------------------------------------------
# Checks shared with check_manifests.sh.

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")


def pod_spec(obj):
    if obj.get("kind") in WORKLOADS + ("Job",):
        return obj["spec"]["template"]["spec"]
    return None


def all_containers(spec):
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def silo_container(spec):
    for c in spec.get("containers") or []:
        if c.get("name") == "silo":
            return c
    return (spec.get("containers") or [None])[0]


def probe_problems(spec):
    """Why the silo container's probes would drop or kill pods too eagerly (empty = fine)."""
    probs = []
    c = silo_container(spec)
    rp, lp = c.get("readinessProbe"), c.get("livenessProbe")
    if not rp or not lp:
        return ["no readinessProbe or livenessProbe"]
    rper, rto, rft = rp.get("periodSeconds", 10), rp.get("timeoutSeconds", 1), rp.get("failureThreshold", 3)
    lper, lto, lft = lp.get("periodSeconds", 10), lp.get("timeoutSeconds", 1), lp.get("failureThreshold", 3)
    if (rp.get("httpGet") or {}).get("path") != "/readyz" or (lp.get("httpGet") or {}).get("path") != "/healthz":
        probs.append("readiness must GET /readyz and liveness /healthz")
    if not 2 <= rper <= 5:
        probs.append(f"readiness periodSeconds {rper} not in 2..5")
    if not 2 <= rto <= 3:
        probs.append(f"readiness timeoutSeconds {rto} not in 2..3")
    if rft < 3:
        probs.append(f"readiness failureThreshold {rft} < 3 (one slow probe drops the pod)")
    if lto < 2:
        probs.append(f"liveness timeoutSeconds {lto} < 2")
    if lft < 3:
        probs.append(f"liveness failureThreshold {lft} < 3")
    if lper * lft < 30:
        probs.append(f"liveness restarts after {lper * lft}s of failures (< 30s)")
    if lper * lft < rper * rft:
        probs.append("liveness gives up before readiness")
    return probs


def spread_problems(spec, pod_labels, want_when="ScheduleAnyway"):
    """Why the pods would not be spread over nodes (empty = fine)."""
    tscs = spec.get("topologySpreadConstraints") or []
    host = [t for t in tscs if t.get("topologyKey") == "kubernetes.io/hostname"]
    if not host:
        aff = (((spec.get("affinity") or {}).get("podAntiAffinity") or {})
               .get("preferredDuringSchedulingIgnoredDuringExecution") or [])
        if any((t.get("podAffinityTerm") or {}).get("topologyKey") == "kubernetes.io/hostname" for t in aff):
            return []
        return ["no topologySpreadConstraints (or preferred podAntiAffinity) by kubernetes.io/hostname"]
    probs = []
    for t in tscs:
        ml = (t.get("labelSelector") or {}).get("matchLabels") or {}
        if not ml or any(pod_labels.get(k) != v for k, v in ml.items()):
            probs.append(f"spread on {t.get('topologyKey')} does not select the pods ({ml})")
        if not isinstance(t.get("maxSkew"), int) or t["maxSkew"] < 1:
            probs.append(f"maxSkew {t.get('maxSkew')!r}")
        if t.get("whenUnsatisfiable") not in ("ScheduleAnyway", "DoNotSchedule"):
            probs.append(f"whenUnsatisfiable {t.get('whenUnsatisfiable')!r}")
    if want_when and host[0].get("whenUnsatisfiable") != want_when:
        probs.append(f"hostname spread is {host[0].get('whenUnsatisfiable')}, expected {want_when}")
    return probs


def security_problems(spec):
    probs = []
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        probs.append("pod securityContext lacks runAsNonRoot: true")
    for c in all_containers(spec):
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            probs.append(f"container {c.get('name')}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            probs.append(f"container {c.get('name')}: readOnlyRootFilesystem is not true")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            probs.append(f"container {c.get('name')}: capabilities do not drop ALL")
    return probs


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def help_envs(help_text):
    return set(re.findall(r"env: ([A-Z_][A-Z0-9_]*)", help_text))


def env_problems(spec, help_text):
    documented = help_envs(help_text)
    probs = []
    for c in all_containers(spec):
        for e in c.get("env") or []:
            n = e.get("name", "")
            if n.startswith("GRANARY_"):
                if n not in documented:
                    probs.append(f"{c.get('name')}: {n} is not a silo setting")
            elif not re.search(r"\$?\b" + re.escape(n) + r"\b", help_text):
                probs.append(f"{c.get('name')}: {n} is not read by the silo (not in --help)")
    return probs


def secret_refs(spec):
    """{(secret name, key)} the pod reads; key None for a whole Secret."""
    refs = set()
    for c in all_containers(spec):
        for e in c.get("env") or []:
            r = ((e.get("valueFrom") or {}).get("secretKeyRef")) or None
            if r:
                refs.add((r["name"], r["key"]))
        for e in c.get("envFrom") or []:
            if e.get("secretRef"):
                refs.add((e["secretRef"]["name"], None))
    for v in spec.get("volumes") or []:
        if v.get("secret"):
            refs.add((v["secret"]["secretName"], None))
    return refs


def start_silo(silo, env_list, where):
    """Start `silo run --memory` with a manifest's literal env; (ok, message)."""
    grains = os.path.join(os.path.dirname(silo), "examples", "counter.so")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    n = 0
    for e in env_list:
        if "value" not in e or e["name"] in ("GRANARY_LISTEN", "GRANARY_HTTP", "GRANARY_GRAINS"):
            continue
        if e["name"].startswith("GRANARY_TLS_"):
            continue
        env[e["name"]] = str(e["value"])
        n += 1
    env.update(GRANARY_LISTEN="127.0.0.1:0", GRANARY_HTTP="127.0.0.1:0")
    p = subprocess.Popen([silo, "run", "--memory", "--grains", grains], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    if p.poll() is not None:
        return False, f"{where}: the silo refused the rendered environment: {p.stdout.read().strip()[:300]}"
    p.terminate()
    try:
        rc = p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        return False, f"{where}: the silo did not stop on SIGTERM"
    if rc != 0:
        return False, f"{where}: the silo exited {rc} on SIGTERM"
    return True, f"{where}: the silo starts with the rendered environment ({n} settings) and stops with 0"


# ---------------------------------------------------------------------------
# The checks of the rendered chart.

SECRETS = {"databaseUrl": "postgresql://granary:pw@postgres:5432/granary", "clusterSecret": "client-secret-1",
           "siloSecret": "silo-secret-1", "httpToken": "http-token-1"}

VALUE_SETS = [
    ("values.yaml", dict(SECRETS)),
    ("tls+replicas+initContainer", dict(SECRETS, replicas=5, tls={"enabled": True, "clientAuth": True},
                                        migrate={"mode": "initContainer"}, image={"tag": ""},
                                        topologySpreadConstraints=[
                                            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                             "whenUnsatisfiable": "ScheduleAnyway"},
                                            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                             "whenUnsatisfiable": "DoNotSchedule"}])),
    ("existingSecret+hook", {"existingSecret": "granary-creds", "networkPolicy": {"enabled": False}}),
]


class Report:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, cond, msg_ok, msg_bad=None):
        if cond:
            print(f"ok   {msg_ok}")
            self.passed += 1
        else:
            print(f"FAIL {msg_bad or msg_ok}")
            self.failed += 1
        return cond


def self_test(r):
    """The renderer refuses what it does not implement, and gets Go's details right."""
    def renders(src, data):
        e = Engine()
        e.add_file("t", src)
        return e.execute("t", data)

    def refuses(src, data, what):
        try:
            renders(src, data)
        except TplError as e:
            return what in str(e)
        return False

    v = {"Values": {"a": {"b": 25000.0}, "s": "x", "n": 1000000.0, "l": [1.0, 2.0], "e": ""}}
    r.check(refuses("{{ .Values.a.c }}", v, "missing value") and refuses("{{ .Values.a | nope }}", v, "nope")
            and refuses("{{ if .Values.s }}", v, "missing {{end}}") and refuses("{{ .Values.s ", v, "unclosed")
            and refuses("{{ block \"x\" . }}{{ end }}", v, "unsupported")
            and refuses("{{ required \"need e\" .Values.e }}", v, "need e")
            and refuses("{{ /* spaced */ }}", v, "comments"),
            "renderer refuses unknown functions and keywords, missing values, unclosed actions; required works")
    got = renders('{{- define "n" -}}[{{ . }}]{{- end -}}\n  {{- $x := .Values.a.b -}}\n'
                  '{{ include "n" $x }} {{ .Values.n }} {{ .Values.n | int64 }} {{ printf "%s-%d" .Values.s 3 }}'
                  ' {{ range $i, $e := .Values.l }}{{ $i }}={{ $e }},{{ end }} {{ .Values.e | default "d" }}'
                  ' {{ if eq .Values.s "y" }}y{{ else if .Values.s }}s{{ else }}n{{ end }}'
                  ' {{ .Values.s | quote }} {{ "a-" | trimSuffix "-" }} {{ "abcdef" | trunc 3 }}'
                  ' {{ toYaml .Values.a | nindent 2 }}', v)
    want = '[25000] 1e+06 1000000 x-3 0=1,1=2, d s "x" a abc \n  b: 25000'
    r.check(got == want, "renderer: trim markers, define/include, variables, range, else if, printf, "
                         "default, quote, toYaml|nindent and Go's float printing (1e+06) as Helm renders them",
            f"renderer self-test: got {got!r}, want {want!r}")


def check_chart(src, silo, r):
    chart_dir = os.path.join(src, "deploy", "helm", "granary")
    help_text = subprocess.run([silo, "--help"], capture_output=True, text=True).stdout
    chart = Chart(chart_dir)

    # The chart's appVersion is the project's version (the image it documents).
    with open(os.path.join(src, "CMakeLists.txt")) as f:
        m = re.search(r"project\(granary VERSION ([0-9.]+)", f.read())
    r.check(m and str(chart.meta.get("appVersion")) == m.group(1),
            f"Chart.yaml appVersion {chart.meta.get('appVersion')} is the project version",
            f"Chart.yaml appVersion {chart.meta.get('appVersion')} != project VERSION {m and m.group(1)}")

    # values.yaml alone must be refused (the secrets are required), a bad
    # migrate.mode too.
    for over, what, label in (({}, "databaseUrl is required", "values.yaml without secrets"),
                              (dict(SECRETS, migrate={"mode": "job"}), "migrate.mode", "migrate.mode=job")):
        try:
            chart.render(over)
            r.check(False, "", f"{label} renders (it should be refused)")
        except TplError as e:
            r.check(what in str(e), f"{label} is refused: {str(e).split(': ', 1)[-1][:80]}",
                    f"{label} refused for another reason: {e}")

    parsed_total = 0
    agree = True
    for label, over in VALUE_SETS:
        try:
            rendered = chart.render(over)
        except (TplError, YamlError) as e:
            r.check(False, "", f"[{label}] does not render: {e}")
            continue
        docs = documents(rendered)
        objs = []
        bad = []
        for name, i, text in docs:
            try:
                obj = load_yaml(text, f"{name}#{i}")
                if pyyaml is not None:
                    try:
                        if mini_load(text, f"{name}#{i}") != obj:
                            agree = False
                    except YamlError:
                        agree = False
            except Exception as e:  # PyYAML's or ours
                bad.append(f"{name}#{i}: {e}")
                continue
            if not isinstance(obj, dict) or not obj.get("kind") or not obj.get("apiVersion") \
                    or not (obj.get("metadata") or {}).get("name"):
                bad.append(f"{name}#{i}: not an object with apiVersion, kind and metadata.name")
                continue
            objs.append((name, obj))
        parsed_total += len(docs)
        r.check(not bad, f"[{label}] {len(rendered)} templates render, {len(docs)} documents parse as YAML "
                         f"({'PyYAML' if pyyaml else 'built-in parser'}) with apiVersion, kind, name",
                f"[{label}] bad documents: {'; '.join(bad)}")
        try:
            check_set(label, over, chart, rendered, objs, help_text, silo, r)
        except (KeyError, TypeError, IndexError, ValueError, AttributeError) as e:
            r.check(False, "", f"[{label}] checks stopped on an unexpected structure: {e!r}")

    if pyyaml is not None:
        with open(os.path.join(chart_dir, "values.yaml")) as f:
            vt = f.read()
        agree = agree and mini_load(vt, "values.yaml") == pyyaml.safe_load(vt)
        r.check(agree, f"the built-in YAML parser (used without PyYAML) agrees with PyYAML on "
                       f"{parsed_total} documents and values.yaml",
                "the built-in YAML parser disagrees with PyYAML (fix it: CI without PyYAML relies on it)")


def check_set(label, over, chart, rendered, objs, help_text, silo, r):
    L = f"[{label}]"
    values = merge_values(chart.values, over)
    by_kind = {}
    for name, o in objs:
        by_kind.setdefault(o["kind"], []).append((name, o))
    names = [(o["kind"], o["metadata"]["name"]) for _, o in objs]
    r.check(len(names) == len(set(names)), f"{L} no two objects share a kind and name",
            f"{L} duplicate objects: {names}")
    deps = by_kind.get("Deployment", [])
    if not r.check(len(deps) == 1, f"{L} one Deployment", f"{L} {len(deps)} Deployments"):
        return
    dep = deps[0][1]
    spec = pod_spec(dep)
    tmeta = dep["spec"]["template"]["metadata"]
    pod_labels = tmeta.get("labels") or {}
    silo_c = silo_container(spec)
    hooks = [(n, o) for n, o in objs if "helm.sh/hook" in ((o["metadata"].get("annotations")) or {})]
    plain = [(n, o) for n, o in objs if (n, o) not in hooks]

    # Selectors: the Deployment's own pods; Service, PDB, NetworkPolicy on them.
    sel = dep["spec"]["selector"]["matchLabels"]
    r.check(selects(sel, pod_labels), f"{L} the Deployment's selector {sel} matches its pod labels",
            f"{L} the Deployment's selector {sel} does not match its pods {pod_labels}")
    others = []
    for _, o in by_kind.get("Service", []):
        others.append(("Service", o["spec"].get("selector")))
    for _, o in by_kind.get("PodDisruptionBudget", []):
        others.append(("PodDisruptionBudget", o["spec"]["selector"].get("matchLabels")))
    for _, o in by_kind.get("NetworkPolicy", []):
        others.append(("NetworkPolicy", o["spec"]["podSelector"].get("matchLabels")))
    miss = [k for k, s in others if not selects(s, pod_labels)]
    r.check(not miss, f"{L} {', '.join(k for k, _ in others)} select the silo pods",
            f"{L} {', '.join(miss)} do not select the silo pods")
    for n, job in by_kind.get("Job", []):
        jl = (job["spec"]["template"].get("metadata") or {}).get("labels") or {}
        hit = [k for k, s in others + [("Deployment", sel)] if selects(s, jl)]
        r.check(not hit, f"{L} the migrate Job's pods are not selected by the Service, PDB or Deployment",
                f"{L} the Job's pods are selected by {hit}")

    # Migrate order.
    mode = values["migrate"].get("mode", "hook")
    jobs = [o for _, o in by_kind.get("Job", [])]
    inits = [c for c in spec.get("initContainers") or [] if c.get("args") == ["migrate"]]
    migrate_images = []
    if values["migrate"]["enabled"] and mode == "hook":
        ok_jobs = r.check(len(jobs) == 1 and not inits, f"{L} migrate.mode=hook: one migrate Job, no initContainer",
                          f"{L} migrate.mode=hook renders {len(jobs)} Jobs and {len(inits)} initContainers")
        if ok_jobs:
            job = jobs[0]
            ann = job["metadata"]["annotations"]
            phases = set(ann.get("helm.sh/hook", "").split(","))
            policy = set(ann.get("helm.sh/hook-delete-policy", "").split(","))
            jw = int(ann.get("helm.sh/hook-weight", "0"))
            r.check({"pre-install", "pre-upgrade"} <= phases and {"before-hook-creation", "hook-succeeded"} <= policy,
                    f"{L} the migrate Job is a pre-install,pre-upgrade hook deleted before-hook-creation,hook-succeeded",
                    f"{L} migrate Job hook {phases} / delete policy {policy}")
            jspec = pod_spec(job)
            migrate_images = [c["image"] for c in jspec["containers"]]
            rendered_secrets = {o["metadata"]["name"]: o for o in [x for _, x in by_kind.get("Secret", [])]}
            problems = []
            for name, key in sorted(secret_refs(jspec), key=str):
                s = rendered_secrets.get(name)
                if s is None:
                    if name != values.get("existingSecret"):
                        problems.append(f"{name} is neither rendered nor the existingSecret")
                    continue
                sann = s["metadata"].get("annotations") or {}
                sph = set(sann.get("helm.sh/hook", "").split(","))
                if not {"pre-install", "pre-upgrade"} <= sph:
                    problems.append(f"Secret {name} is not a pre-install,pre-upgrade hook: Helm creates it "
                                    f"only after the hooks, so the Job cannot start on a first install")
                    continue
                sw = int(sann.get("helm.sh/hook-weight", "0"))
                if not sw < jw:
                    problems.append(f"Secret {name} hook weight {sw} is not below the Job's {jw}")
                if key and key not in (s.get("stringData") or {}) and key not in (s.get("data") or {}):
                    problems.append(f"Secret {name} has no key {key}")
                sp = set(sann.get("helm.sh/hook-delete-policy", "").split(","))
                if not {"before-hook-creation", "hook-succeeded"} <= sp:
                    problems.append(f"Secret {name} delete policy {sp}")
            desc = ("the existing Secret" if values.get("existingSecret")
                    else "a hook Secret of lower weight")
            r.check(not problems, f"{L} hook order: the migrate Job reads only {desc} "
                                  f"(exists before the Job on a first install)",
                    f"{L} hook order: {'; '.join(problems)}")
            # Its name changes per revision and per image.
            n1 = job["metadata"]["name"]
            try:
                n2 = [o for _, o in _objs(chart.render(over, {"Revision": 2})) if o["kind"] == "Job"][0]["metadata"]["name"]
                n3 = [o for _, o in _objs(chart.render(merge_values(over, {"image": {"tag": "other"}})))
                      if o["kind"] == "Job"][0]["metadata"]["name"]
                r.check(len({n1, n2, n3}) == 3 and all(len(x) <= 63 for x in (n1, n2, n3)),
                        f"{L} the migrate Job's name changes per revision and image ({n1}, {n2}, {n3})",
                        f"{L} migrate Job names {n1}, {n2}, {n3} (must differ, <= 63 chars)")
            except (TplError, YamlError, IndexError) as e:
                r.check(False, "", f"{L} rendering revision 2 / another tag: {e}")
            r.check(not security_problems(jspec), f"{L} the migrate Job runs non-root, read-only, no capabilities",
                    f"{L} migrate Job: {security_problems(jspec)}")
            r.check(not env_problems(jspec, help_text), f"{L} the migrate Job's env vars are silo settings",
                    f"{L} migrate Job env: {env_problems(jspec, help_text)}")
    elif values["migrate"]["enabled"]:
        r.check(len(inits) == 1 and not jobs and not hooks,
                f"{L} migrate.mode=initContainer: `silo migrate` runs in every silo pod before the silo; no hooks",
                f"{L} initContainer mode renders {len(inits)} migrate initContainers, {len(jobs)} Jobs, "
                f"{len(hooks)} hooks")
        migrate_images = [c["image"] for c in inits]
        refs = {n for n, k in secret_refs({"containers": inits})}
        r.check(refs and not any(n in {o["metadata"]["name"] for _, o in hooks} for n in refs),
                f"{L} the migrate initContainer reads the release's Secret {sorted(refs)}",
                f"{L} the migrate initContainer's secrets: {sorted(refs)}")
    r.check(migrate_images and all(i == silo_c["image"] for i in migrate_images),
            f"{L} the Deployment and the migrate step use one image ({silo_c['image']})",
            f"{L} images differ: silo {silo_c['image']}, migrate {migrate_images}")
    tag = values["image"]["tag"] or str(chart.meta["appVersion"])
    r.check(silo_c["image"] == f"{values['image']['repository']}:{tag}", f"{L} image is repository:tag",
            f"{L} image {silo_c['image']}")

    # No resource the chart renders as a plain object is read by a hook.
    plain_names = {(o["kind"], o["metadata"]["name"]) for _, o in plain}
    late = []
    for _, h in hooks:
        hs = pod_spec(h)
        if hs:
            late += [n for n, _ in secret_refs(hs) if ("Secret", n) in plain_names]
    r.check(not late, f"{L} no hook reads a Secret Helm creates only after the hooks",
            f"{L} hooks read release Secrets {late}")

    # checksum/secret rolls the pods when the Secret changes.
    ann = tmeta.get("annotations") or {}
    want = hashlib.sha256(rendered[f"{chart.name}/templates/secret.yaml"].encode()).hexdigest()
    r.check(ann.get("checksum/secret") == want,
            f"{L} checksum/secret is the sha256 of the rendered secret.yaml",
            f"{L} checksum/secret {ann.get('checksum/secret')!r} != {want}")
    if not values.get("existingSecret"):
        other = chart.render(merge_values(over, {"clusterSecret": "rotated"}))
        dep2 = [o for _, o in _objs(other) if o["kind"] == "Deployment"][0]
        a2 = (dep2["spec"]["template"]["metadata"].get("annotations") or {}).get("checksum/secret")
        r.check(a2 and a2 != ann.get("checksum/secret"), f"{L} a changed secret value changes checksum/secret",
                f"{L} checksum/secret did not change with the secret")

    # Probes, spread, security, env, grace.
    pp = probe_problems(spec)
    rp = silo_c.get("readinessProbe", {})
    r.check(not pp, f"{L} probes: readiness every {rp.get('periodSeconds')}s, timeout {rp.get('timeoutSeconds')}s, "
                    f"{rp.get('failureThreshold')} failures; liveness conservative",
            f"{L} probes: {'; '.join(pp)}")
    want_when = "ScheduleAnyway" if "topologySpreadConstraints" not in over else None
    sp = spread_problems(spec, pod_labels, want_when)
    r.check(not sp, f"{L} topologySpreadConstraints by hostname"
                    f"{' (ScheduleAnyway by default)' if want_when else ''} select the silo pods",
            f"{L} spread: {'; '.join(sp)}")
    if "topologySpreadConstraints" in over:
        got = [{k: t[k] for k in ("maxSkew", "topologyKey", "whenUnsatisfiable")}
               for t in spec.get("topologySpreadConstraints") or []]
        r.check(got == over["topologySpreadConstraints"], f"{L} topologySpreadConstraints come from values",
                f"{L} topologySpreadConstraints {got} != values {over['topologySpreadConstraints']}")
    r.check(not security_problems(spec), f"{L} every silo-pod container runs non-root, read-only, no capabilities",
            f"{L} security: {security_problems(spec)}")
    ep = env_problems(spec, help_text)
    envs = [e["name"] for c in all_containers(spec) for e in c.get("env") or []]
    r.check(not ep, f"{L} all {len(envs)} env vars of the silo pods are documented by silo --help",
            f"{L} env: {'; '.join(ep)}")
    refs = secret_refs(spec)
    sec = {o["metadata"]["name"]: o for _, o in by_kind.get("Secret", []) if (_, o) not in hooks}
    missing = [f"{n}/{k}" for n, k in refs if n in sec and k and k not in (sec[n].get("stringData") or {})]
    ext = sorted({n for n, _ in refs if n not in sec})
    expect_ext = sorted(filter(None, [values.get("existingSecret")] +
                               ([values["tls"]["secretName"]] if values["tls"]["enabled"] else [])))
    r.check(not missing and ext == expect_ext,
            f"{L} the pods read keys the chart's Secret has; external Secrets: {ext or 'none'}",
            f"{L} missing secret keys {missing}; external Secrets {ext}, expected {expect_ext}")
    env = {e["name"]: e.get("value") for e in silo_c.get("env") or []}
    ports = {p["name"]: p["containerPort"] for p in silo_c.get("ports") or []}
    r.check(env.get("GRANARY_LISTEN", "").endswith(f":{ports.get('grains')}")
            and env.get("GRANARY_HTTP", "").endswith(f":{ports.get('http')}"),
            f"{L} GRANARY_LISTEN/GRANARY_HTTP are the grains/http containerPorts",
            f"{L} listen/http {env.get('GRANARY_LISTEN')}/{env.get('GRANARY_HTTP')} vs ports {ports}")
    numeric = [k for k in ("GRANARY_DRAIN_TIMEOUT_MS", "GRANARY_HEARTBEAT_MS", "GRANARY_LEASE_MS")
               if not re.fullmatch(r"[0-9]+", str(env.get(k)))]
    r.check(not numeric, f"{L} millisecond settings render as integers",
            f"{L} not integers: {[(k, env.get(k)) for k in numeric]}")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    sleep = int(silo_c["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = int(env.get("GRANARY_DRAIN_TIMEOUT_MS", "25000")) // 1000
    r.check(grace > drain + sleep, f"{L} grace {grace}s > drain {drain}s + preStop {sleep}s",
            f"{L} grace {grace}s does not cover drain {drain}s + preStop {sleep}s")
    r.check(dep["spec"]["replicas"] == values["replicas"], f"{L} replicas {dep['spec']['replicas']}",
            f"{L} replicas {dep['spec']['replicas']} != {values['replicas']}")
    if values["tls"]["enabled"]:
        mounts = [m["mountPath"] for m in silo_c.get("volumeMounts") or []]
        vols = [v.get("secret", {}).get("secretName") for v in spec.get("volumes") or []]
        tls_env = {k for k in env if k.startswith("GRANARY_TLS_")}
        files_ok = all(str(env.get(k, "")).startswith("/etc/granary/tls/")
                       for k in ("GRANARY_TLS_CERT", "GRANARY_TLS_KEY", "GRANARY_TLS_CA"))
        r.check(files_ok and len(tls_env) == 5 and "/etc/granary/tls" in mounts
                and values["tls"]["secretName"] in vols,
                f"{L} TLS: the certificate Secret is mounted and the silo points at its files",
                f"{L} TLS: env {sorted(tls_env)}, mounts {mounts}, volumes {vols}")
    if label == VALUE_SETS[0][0]:
        ok, msg = start_silo(silo, silo_c.get("env") or [], L)
        r.check(ok, msg)


def _objs(rendered):
    return [(n, load_yaml(t, n)) for n, _, t in documents(rendered)]


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().split("\n")[0], file=sys.stderr)
        return 2
    silo, src = argv[1], argv[2]
    r = Report()
    self_test(r)
    try:
        check_chart(src, silo, r)
    except (TplError, YamlError, OSError) as e:
        r.check(False, "", f"chart: {e}")
    print(f"{r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
