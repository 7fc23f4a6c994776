"""Lecture decks built for projection: an executed notebook reshaped into slides for a 1280x720 screen.

    from metalstm.tools.slides import prepare
    deck_nb = prepare(executed_nb)          # a new notebook; then nbconvert's reveal.js exporter

The notebook keeps its code; only the deck changes. `prepare` applies these rules, in order:

- a code cell shows its code on a slide (less the test markers, `# NBVAL_CHECK_OUTPUT`) only when the code is short (at most MAX_CODE_LINES lines of at
  most MAX_COLS characters) and it draws nothing (no picture, no HTML table); a cell that computes and
  draws shows only its output. Cell tags override the rule: "slide-show-code" shows the code,
  "slide-hide-code" (or the older "hide-input") hides it, "slide-skip" drops the cell from the deck;
- each output becomes a block of its own, so a slide too tall for the screen can be split between them
  (the deck's script splits it in the browser, where heights are measured); long printed text is cut into
  blocks of at most MAX_OUTPUT_LINES lines, and a printed table (aligned columns) becomes an HTML table;
  text never wraps (the CSS sets `white-space: pre`), lines longer than MAX_COLS are broken with a mark;
  warnings (stderr) are left out of the deck;
- a markdown cell longer than MAX_MARKDOWN_LINES source lines is cut at blank lines into several cells;
- an agenda slide (the deck's sections, minutes each) follows the title, a recap slide (the objectives of
  the first cell, as done) precedes the exercises;
- every slide gets speaker notes that start with a time estimate (`_minutes`), added to the notebook's own
  notes cells where the slide has some; where those notes put a question to the room ("ask the room",
  "before showing", "predict"), the slide's first output and what follows it come in as a fragment, so
  the answer is not on screen while the question is asked;
- a widget output (notebook 06's explorer) is replaced by `frames`, if given: pre-rendered pictures shown
  one after another as reveal.js fragments (the arrow keys step through them, no kernel needed).

Sizes: the slide is SLIDE = (1280, 720) CSS pixels, shown unscaled on a 1280x720 screen; body text
BODY_PX, code and printed output CODE_PX (the CSS of metalstm.tools.course's deck template).
"""
from __future__ import annotations

import base64
import copy
import math
import re

SLIDE = (1280, 720)
BODY_PX, CODE_PX = 24, 20
MAX_CODE_LINES = 14          # more lines than fit beside a sentence on one slide: show the output only
MAX_COLS = 96                # characters of 20 px monospace across the slide (about 12 px each, 1232 px)
MAX_OUTPUT_LINES = 14        # printed lines per block
MAX_MARKDOWN_LINES = 12      # source lines of one markdown block
SHOW, HIDE, SKIP = "slide-show-code", "slide-hide-code", "slide-skip"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
OBJECTIVES = "After this notebook you will be able to"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
RICH = ("image/png", "image/jpeg", "image/svg+xml", "text/html", "text/markdown", "text/latex")


def _kind(cell) -> str:
    return cell.metadata.get("slideshow", {}).get("slide_type", "-") or "-"


def _set_kind(cell, kind: str) -> None:
    cell.metadata.setdefault("slideshow", {})["slide_type"] = kind


def _tags(cell) -> set[str]:
    return set(cell.metadata.get("tags", []))


def _markdown(source: str, kind: str = "-"):
    from nbformat.v4 import new_markdown_cell
    cell = new_markdown_cell(source)
    _set_kind(cell, kind)
    return cell


MARKER = re.compile(r"^[ \t]*#[ \t]*(NBVAL_|nbval-|pytest:)\S*.*(\n|$)", re.MULTILINE)   # a test's marker line


def code_shown(cell) -> bool:
    """Whether a code cell's code appears on its slide (the rule of the module docstring)."""
    tags = _tags(cell)
    if SHOW in tags:
        return True
    if tags & {HIDE, "hide-input"}:
        return False
    lines = cell.source.rstrip().splitlines()
    if not lines or len(lines) > MAX_CODE_LINES or max(len(line) for line in lines) > MAX_COLS:
        return False
    draws = any(set(o.get("data", {})) & set(RICH) for o in cell.get("outputs", []))
    return not draws


def table_rows(text: str) -> list[list[str]] | None:
    """A printed table as rows of cells, or None. A table: at least 3 lines, each cut by runs of two or
    more spaces into the same number (at least 3) of columns, most of the cells after the first being
    numbers (a header row of words is allowed; rule lines of dashes are left out); an indented header
    (over all but the first column) gets an empty first cell. Where that does not cut every line alike,
    the columns are found by position instead (where every line has a space), and then every column must
    have a header or a value on most lines: text that merely lines up in places (a line that goes on
    under the one before it, a sentence) is not a table."""
    lines = [line.rstrip() for line in text.strip("\n").splitlines() if not re.fullmatch(r"\s*[-=]{3,}\s*", line)]
    if len(lines) < 3 or any(not line.strip() for line in lines):
        return None
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines]
    width = len(rows[-1])
    if lines[0].startswith("  ") and len(rows[0]) == width - 1 and all(len(r) == width for r in rows[1:]):
        rows[0] = [""] + rows[0]                   # an indented header over all but the first column
    elif any(len(r) != width for r in rows):
        # cells of two words set with single spaces between columns: columns that line up
        rows = _columns_by_position(lines)
        width = len(rows[0])
        if any(sum(bool(r[j]) for r in rows) < 0.6 * len(rows) for j in range(width)):
            return None                            # a column nearly empty: not aligned columns
    if width < 3 or any(len(r) != width for r in rows):
        return None
    if any(len(r) == width and not r[0] and j > 0 for j, r in enumerate(rows)):
        return None                                # a line with no first cell after the first: it goes on a line
    cells = [c for r in rows[1:] for c in r[1:]]
    numeric = sum(bool(re.search(r"\d", c)) for c in cells)
    return rows if numeric >= 0.6 * len(cells) else None


def table_groups(text: str) -> list[list[list[str]]] | None:
    """Printed text of several tables one under the other, each with its own header line (the first line's
    column names again, e.g. one table per shot: '1-shot  1-f  later' ... '5-shot  1-f  later' ...), as
    those tables; a single table as [rows]; None if it is not a table."""
    lines = text.strip("\n").splitlines()
    names = re.split(r"\s{2,}", lines[0].strip())[1:] if lines else []
    heads = [i for i, line in enumerate(lines) if names and re.split(r"\s{2,}", line.strip())[1:] == names]
    if len(heads) > 1 and heads[0] == 0:
        parts = [lines[a:b] for a, b in zip(heads, heads[1:] + [len(lines)])]
        tables = [table_rows("\n".join(part)) for part in parts]
        if all(tables):
            return tables
    rows = table_rows(text)
    return [rows] if rows else None


def _columns_by_position(lines: list[str]) -> list[list[str]]:
    """Lines cut into columns at the character positions where every line has a space (or has ended)."""
    n = max(len(line) for line in lines)
    gap = [all(i >= len(line) or line[i] == " " for line in lines) for i in range(n)]
    spans, start = [], None
    for i in range(n + 1):
        if i < n and not gap[i] and start is None:
            start = i
        elif (i == n or gap[i]) and start is not None:
            spans.append((start, i))
            start = None
    return [[line[a:b].strip() for a, b in spans] for line in lines]


NUMERIC = re.compile(r"^[-+\u2212]?[\d.,]+(e[-+]?\d+)?\s*%?(\s*(\+-|\u00b1).*)?$")


def is_header(rows: list[list[str]]) -> bool:
    """Whether a printed table's first row is its header: no number after its first cell, over a column
    whose other cells are mostly numbers (a table printed without a header starts with a row of data,
    e.g. 'meta-train  675 classes  7 alphabets', which is not made a header)."""
    if len(rows) < 2 or any(NUMERIC.match(c) for c in rows[0][1:]):
        return False
    return any(not NUMERIC.match(rows[0][j]) and sum(bool(NUMERIC.match(r[j])) for r in rows[1:]) > 0.5 * (len(rows) - 1)
               for j in range(1, len(rows[0])))


def _html_table(rows: list[list[str]], header: bool = True) -> str:
    from html import escape
    numeric = NUMERIC
    head = header and not any(numeric.match(c) for c in rows[0][1:])
    out = ['<table class="metalstm-table">']
    for i, row in enumerate(rows):
        tag = "th" if i == 0 and head else "td"
        num = ' class="num"'
        cells = "".join(f"<{tag}{num if numeric.match(c) else ''}>{escape(c)}</{tag}>" for c in row)
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


TABLE_PX = 1180              # the width a table may take (the slide less its margins and a reserve)
CELL_PAD_PX = 20             # a cell's padding, left and right (the deck's CSS)
CODE_PAD_PX = 10             # a code span's padding
MARGIN = 1.04                # measured text widths are scaled by this (rounding, kerning in the browser)
KEY_SHARE = 0.55             # a first column wider than this share of TABLE_PX is shortened (a legend says the rest)
FONTS = {"sans": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf", "mono": "DejaVuSansMono.ttf"}   # the deck's


def _font(kind: str):
    """The deck's table font at CODE_PX (the DejaVu files matplotlib ships, the fonts the browser uses)."""
    if kind not in _FONTS:
        from pathlib import Path

        import matplotlib
        from PIL import ImageFont
        _FONTS[kind] = ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / FONTS[kind]), CODE_PX)
    return _FONTS[kind]


_FONTS: dict = {}


def cell_px(cell: str, bold: bool = False) -> float:
    """The width a table cell's text takes on the slide (it never wraps): its Markdown rendered (no ** or
    marks, a link's text, maths as its symbols, `+-` as the sign), measured in the deck's fonts at CODE_PX,
    code spans in the monospace font with their padding, times MARGIN, plus the cell's padding."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cell)                            # [text](url)
    text = re.sub(r"\$([^$]*)\$", lambda m: re.sub(r"\\[A-Za-z]+|\\.", "x", m.group(1)).translate(
        {ord(c): None for c in "{}^_ "}), text)                                             # maths: its symbols
    text = text.replace("+-", "\u00b1").replace("&nbsp;", " ").replace("**", "")
    text = re.sub(r"(?<!\w)[*_](?=\S)|(?<=\S)[*_](?!\w)", "", text)
    width = 0.0
    for k, part in enumerate(text.strip().split("`")):                                     # odd parts: code spans
        if part:
            width += _font("mono").getlength(part) + CODE_PAD_PX if k % 2 else \
                _font("bold" if bold else "sans").getlength(part)
    return width * MARGIN + CELL_PAD_PX


def _column_px(rows: list[list[str]], j: int) -> float:
    """The width of column j on the slide: its widest cell (the first row, a header, in bold)."""
    return max(cell_px(r[j], bold=i == 0) for i, r in enumerate(rows))


def table_px(rows: list[list[str]]) -> float:
    return sum(_column_px(rows, j) for j in range(len(rows[0])))


def key_columns(rows: list[list[str]]) -> int:
    """How many leading columns identify a row (repeated on every part of a split table): the first, and
    each next one whose cells below the header are all words (none empty, none a number), as long as
    at least one column is left and the keys take at most KEY_SHARE of TABLE_PX."""
    k = 1
    while k < len(rows[0]) - 1 and all(r[k] and not NUMERIC.match(r[k]) for r in rows[1:]) and \
            sum(_column_px(rows, j) for j in range(k + 1)) <= KEY_SHARE * TABLE_PX:
        k += 1
    return k


def split_columns(rows: list[list[str]]) -> list[list[list[str]]]:
    """A table too wide for the slide as the fewest tables that fit, each repeating the key columns
    (key_columns: those that say which row it is), the columns in order; among those splits, the one whose
    widest part is narrowest (no lonely last column)."""
    nkey = key_columns(rows)
    key, widths = sum(_column_px(rows, j) for j in range(nkey)), [_column_px(rows, j) for j in range(nkey, len(rows[0]))]

    def splits(start, parts):              # contiguous groups of widths[start:] into `parts` groups that fit
        if parts == 1:
            return [[list(range(start, len(widths)))]] if key + sum(widths[start:]) <= TABLE_PX else []
        out = []
        for end in range(start + 1, len(widths) - parts + 2):
            if key + sum(widths[start:end]) > TABLE_PX:
                break
            out.extend([list(range(start, end))] + rest for rest in splits(end, parts - 1))
        return out

    best = None
    for parts in range(1, len(widths) + 1):
        found = splits(0, parts)
        if found:
            best = min(found, key=lambda groups: max(key + sum(widths[j] for j in g) for g in groups))
            break
    best = best or [[j] for j in range(len(widths))]             # a column wider than the slide: alone
    return [[r[:nkey] + [r[j + nkey] for j in group] for r in rows] for group in best]


KEY = re.compile(r"^((?:\([^)]*\)\s*)?(?:`[^`]+`|[^:(`]+?))\s*(?=[:(])")


def short_keys(rows: list[list[str]]) -> tuple[list[list[str]], list[tuple[str, str]]] | None:
    """A first column too wide to repeat beside the others (more than KEY_SHARE of TABLE_PX): each cell cut
    at its first ':' or '(' (a leading '(...)' kept), and the legend [(short key, the rest)] of the cells
    that were cut (the header's first); None when the short keys are still too wide."""
    shorts, legend = [], []
    for r in rows:
        m = KEY.match(r[0])
        short = m.group(1).strip() if m else r[0]
        rest = r[0][len(m.group(0)):].strip() if m else ""
        rest = rest[1:].strip() if rest.startswith(":") else rest
        if rest.startswith("(") and rest.endswith(")") and rest.count("(") == 1:
            rest = rest[1:-1]
        shorts.append(short)
        if rest:
            legend.append((short, rest))
    new = [[s] + r[1:] for s, r in zip(shorts, rows)]
    return (new, legend) if _column_px(new, 0) <= KEY_SHARE * TABLE_PX else None


def fit_table(rows: list[list[str]]) -> tuple[list[list[list[str]]], list[tuple[str, str]]]:
    """A table (first row: its header) as the tables that show it on a slide without wrapping a cell, and a
    legend: itself when it fits; else split by columns (the first column repeated), its first column first
    shortened where that column alone is too wide (short_keys: the legend says the rest, as prose after the
    tables)."""
    if table_px(rows) <= TABLE_PX:
        return [rows], []
    legend = []
    if _column_px(rows, 0) > KEY_SHARE * TABLE_PX:
        cut = short_keys(rows)
        if cut:
            rows, legend = cut
    return split_columns(rows), legend


def legend_markdown(legend: list[tuple[str, str]]) -> str:
    return "\n".join(f"- **{key}**: {rest}" for key, rest in legend)


def _pipe_cells(line: str) -> list[str]:
    """The cells of a Markdown table row (| a | b |), '|' inside code spans, maths or escaped kept."""
    cells, cell, code, maths, prev = [], "", False, False, ""
    for ch in line.strip().strip("|") if line.strip().endswith("|") else line.strip().lstrip("|"):
        if ch == "`" and not maths:
            code = not code
        elif ch == "$" and not code:
            maths = not maths
        if ch == "|" and not code and not maths and prev != "\\":
            cells.append(cell.strip())
            cell = ""
        else:
            cell += ch
        prev = ch
    return cells + [cell.strip()]


def _pipe_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def fit_markdown_tables(text: str) -> list[str]:
    """Markdown text whose pipe tables are too wide for the slide as several pieces: the text before a
    table with its first part, each further part (and a legend, fit_table) a piece of its own, the text
    after it a piece of its own. Text without a wide table comes back as it is, in one piece."""
    lines, pieces, current, i = text.split("\n"), [], [], 0
    while i < len(lines):
        is_table = (lines[i].lstrip().startswith("|") and i + 1 < len(lines)
                    and re.match(r"^\s*\|?\s*:?-{3,}", lines[i + 1]))
        if not is_table:
            current.append(lines[i])
            i += 1
            continue
        end = i + 2
        while end < len(lines) and lines[end].lstrip().startswith("|"):
            end += 1
        rows = [_pipe_cells(lines[i])] + [_pipe_cells(line) for line in lines[i + 2:end]]
        width = len(rows[0])
        rows = [r[:width] + [""] * (width - len(r)) for r in rows]
        parts, legend = fit_table(rows)
        if len(parts) == 1 and not legend:
            current.extend(lines[i:end])
        else:
            for k, part in enumerate(parts):
                table = [_pipe_line(part[0]), _pipe_line(["---"] * len(part[0]))] + [_pipe_line(r) for r in part[1:]]
                if k:
                    pieces.append("\n".join(current).strip("\n"))
                    current = []
                current.extend(table)
            pieces.append("\n".join(current).strip("\n"))
            current = [legend_markdown(legend)] if legend else []
        i = end
    if "\n".join(current).strip() or not pieces:
        pieces.append("\n".join(current).strip("\n") if pieces else "\n".join(current))
    return [p for p in pieces if p.strip()] or [text]


def _bracket_cut(line: str) -> tuple[int, int] | None:
    """Where a line too long can go on without a mark, as Python itself continues it: after the last ', '
    within MAX_COLS that is inside brackets, the rest indented under the bracket's first character (a
    list, a call, a signature); (cut, indent) or None. Quotes are skipped."""
    stack, quote, best = [], None, None
    for i, ch in enumerate(line[:MAX_COLS]):
        if quote:
            quote = None if ch == quote and line[i - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            stack.append(i)
        elif ch in ")]}" and stack:
            stack.pop()
        elif ch == "," and stack and line[i + 1:i + 2] == " " and 8 < stack[-1] + 1 < MAX_COLS // 2 < i:
            best = (i + 1, stack[-1] + 1)
    return best


def _comment_at(line: str) -> int | None:
    """The column of a line's comment ('# ' outside quotes, a whole-line one or after the code), or None."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote and line[i - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and line[i + 1:i + 2] == " " and (i == 0 or line[i - 1] == " "):
            return i
    return None


def _break_long(line: str) -> list[str]:
    """A printed line longer than MAX_COLS, broken: a comment goes on as a comment under its '#'; inside
    brackets after a comma, the rest under the bracket (_bracket_cut: no mark, the way code is written);
    else at a space, with a mark where it goes on, the rest indented under the line it continues."""
    out, rest = [], line
    while len(rest) > MAX_COLS:
        bracket = _bracket_cut(rest)
        hash_at = _comment_at(rest)
        cut = rest.rfind(" ", MAX_COLS // 2, MAX_COLS - 2)
        if hash_at is not None and cut > hash_at + 2:               # a comment goes on under its '#'
            out.append(rest[:cut])
            rest = " " * hash_at + "# " + rest[cut:].lstrip()
        elif bracket:
            out.append(rest[:bracket[0]])
            rest = " " * bracket[1] + rest[bracket[0]:].lstrip()
        else:
            cut = cut if cut > 0 else MAX_COLS - 2
            out.append(rest[:cut] + " \u21a9")
            indent = min(len(rest) - len(rest.lstrip()) + 4, MAX_COLS // 3)   # under the line it continues
            rest = " " * indent + rest[cut:].lstrip()
    return out + [rest]


def text_blocks(text: str) -> list[dict]:
    """Printed text as a list of output blocks: tables as HTML, the rest in blocks of at most
    MAX_OUTPUT_LINES lines, long lines broken."""
    from nbformat.v4 import new_output

    text = ANSI.sub("", text).strip("\n")
    blocks, pending = [], []

    def flush():
        lines = [piece for line in pending for piece in _break_long(line)]
        for i in range(0, len(lines), MAX_OUTPUT_LINES):
            blocks.append(new_output("stream", name="stdout", text="\n".join(lines[i:i + MAX_OUTPUT_LINES]) + "\n"))
        pending.clear()

    # tables are runs of lines between blank lines (or the whole text)
    for para in re.split(r"\n\s*\n", text):
        for rows in table_groups(para) or [None]:
            if not rows:
                pending.extend(para.splitlines() + [""])
                continue
            flush()
            # a long table: several tables of at most MAX_OUTPUT_LINES rows, each with the header row
            head = rows[:1] if is_header(rows) else []
            body, step = rows[len(head):], MAX_OUTPUT_LINES - len(head)
            for i in range(0, len(body), step):
                parts, legend = fit_table(head + body[i:i + step])
                for part in parts:
                    blocks.append(new_output("display_data", data={"text/html": _html_table(part, header=bool(head)),
                                                                   "text/plain": para}))
                if legend:
                    blocks.append(new_output("display_data", data={"text/markdown": legend_markdown(legend),
                                                                   "text/plain": para}))
    while pending and not pending[-1].strip():
        pending.pop()
    flush()
    return blocks


def split_markdown(source: str) -> list[str]:
    """A markdown cell cut at blank lines (outside code fences and $$ blocks) into pieces of at most
    about MAX_MARKDOWN_LINES lines; a heading, and a paragraph that ends with ':' (a lead-in to a list),
    stay with what follows them."""
    if len(source.splitlines()) <= MAX_MARKDOWN_LINES:
        return [source]
    blocks, current, fenced, maths = [], [], False, False
    for line in source.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
        if not fenced and line.count("$$") % 2:
            maths = not maths
        if not line.strip() and not fenced and not maths and current:
            blocks.append(current)
            current = []
        elif line.strip() or current:
            current.append(line)
    if current:
        blocks.append(current)
    blocks = [part for block in blocks for part in _list_parts(block)]
    pieces, piece = [], []                # piece: its blocks
    lines = lambda bs: sum(len(b) for b in bs) + len(bs) - 1      # noqa: E731 (blank lines between blocks)
    heading = lambda bs: len(bs) == 1 and len(bs[0]) == 1 and bs[0][0].startswith("#")   # noqa: E731
    for block in blocks:
        if piece and lines(piece + [block]) > MAX_MARKDOWN_LINES and not heading(piece):
            # a lead-in ("What to look for:") goes on with what it introduces: the cut comes before it;
            # where it opens the piece (after a heading at most), the piece goes on unless far too long
            keep = piece[:-1] if piece[-1][-1].rstrip().endswith(":") else piece
            if not keep or heading(keep):
                keep = piece if lines(piece + [block]) > MAX_MARKDOWN_LINES * 3 // 2 else []
            if keep:
                pieces.append(keep)
                piece = piece[len(keep):]
        piece = piece + [block]
    if piece:
        pieces.append(piece)
    pieces = [[line for k, b in enumerate(p) for line in ([""] if k else []) + b] for p in pieces]
    return ["\n".join(p) for p in pieces]


def _list_parts(block: list[str]) -> list[list[str]]:
    """A block longer than MAX_MARKDOWN_LINES that is a list (no blank line between its items) cut between
    its items into parts of at most MAX_MARKDOWN_LINES lines (a numbered list goes on at its number)."""
    if len(block) <= MAX_MARKDOWN_LINES or not re.match(r"^(\d+\.|[-*]) ", block[0]):
        return [block]
    parts, part = [], []
    for line in block:
        if re.match(r"^(\d+\.|[-*]) ", line) and part and len(part) + 1 > MAX_MARKDOWN_LINES // 2:
            parts.append(part)
            part = []
        part.append(line)
    return parts + [part]


MAX_TABLE_ROWS = 10          # body rows of a Markdown table on one block (cut into blocks of about equal size)


def markdown_blocks(text: str) -> list[str]:
    """Markdown written by code (an output) as blocks that a slide can be split between: paragraphs
    apart, a table too wide for the slide cut by columns (fit_table), and each table of more than
    MAX_TABLE_ROWS rows cut into tables that repeat its header."""
    blocks, caption = [], []
    for para in re.split(r"\n\s*\n", text.strip()):
        para = para.replace(" +- ", "\u00a0\u00b1\u00a0")   # value ± interval: not parted by a line break
        lines = caption + para.splitlines()       # a short line before a table stays with it (its caption)
        caption = []
        start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("|")), None)
        if start is None and len(lines) <= 2:
            caption = lines + [""]
            continue
        if start is None:
            blocks.append("\n".join(lines))
            continue
        end = start + 2
        while end < len(lines) and lines[end].lstrip().startswith("|"):
            end += 1
        rows = [_pipe_cells(lines[start])] + [_pipe_cells(line) for line in lines[start + 2:end]]
        rows = [r[:len(rows[0])] + [""] * (len(rows[0]) - len(r)) for r in rows]
        before, (parts, legend) = lines[:start], fit_table(rows)
        for part in parts if table_px(rows) > TABLE_PX else [None]:
            head, body = (lines[start:start + 2], lines[start + 2:end]) if part is None else \
                ([_pipe_line(part[0]), _pipe_line(["---"] * len(part[0]))], [_pipe_line(r) for r in part[1:]])
            step = math.ceil(len(body) / max(1, math.ceil(len(body) / MAX_TABLE_ROWS)))   # equal parts
            for i in range(0, max(len(body), 1), max(step, 1)):
                blocks.append("\n".join(before + head + body[i:i + max(step, 1)]))
                before = []
        if legend:
            blocks.append(legend_markdown(legend))
        if lines[end:]:
            blocks.append("\n".join(lines[end:]))
    if caption:
        blocks.append("\n".join(caption[:-1]))
    return blocks


def frames_html(pngs: list[bytes], caption: str = "") -> str:
    """Pictures shown one after another in one place, stacked: the first at once, each next one at the
    next reveal.js fragment (right arrow: next picture, left: back; no kernel, no network). Frame 0
    fades out at fragment 1, frames 1..n-2 are visible only while current, the last one stays."""
    n, out = len(pngs), ['<div class="metalstm-frames">']
    for i, png in enumerate(pngs):
        data = base64.b64encode(png).decode("ascii")
        if i == 0:
            attrs = 'class="metalstm-frame fragment fade-out" data-fragment-index="1"' if n > 1 else \
                'class="metalstm-frame"'
        elif i < n - 1:
            attrs = f'class="metalstm-frame fragment current-visible" data-fragment-index="{i}"'
        else:
            attrs = f'class="metalstm-frame fragment" data-fragment-index="{i}"'
        out.append(f'<img {attrs} alt="frame {i + 1} of {n}" src="data:image/png;base64,{data}">')
    out.append("</div>")
    if caption:
        out.append(f'<p class="metalstm-caption">{caption}</p>')
    return "\n".join(out)


def _outputs(cell, frames) -> list:
    """A code cell's outputs as the blocks of the deck."""
    from nbformat.v4 import new_output
    blocks, text = [], []

    def flush():
        if text:
            blocks.extend(text_blocks("".join(text)))
            text.clear()

    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            if out.get("name") == "stdout":
                text.append(out.get("text", ""))
            continue
        flush()
        if kind == "error":                       # the traceback does not fit a slide: its last line does
            text.append(f"{out.get('ename', 'Error')}: {ANSI.sub('', str(out.get('evalue', '')))}\n")
        elif kind in ("display_data", "execute_result"):
            data = out.get("data", {})
            if WIDGET_VIEW in data and frames and "image/png" in data:   # the explorer (show() adds its picture)
                blocks.append(new_output("display_data", data={"text/html": frames}))
            elif WIDGET_VIEW in data and not set(data) & set(RICH):       # a progress bar: nothing to show
                continue
            elif "text/markdown" in data and not set(data) & {"image/png", "image/jpeg", "image/svg+xml"}:
                blocks.extend(new_output("display_data", data={"text/markdown": piece})
                              for piece in markdown_blocks(str(data["text/markdown"])))
            elif set(data) & set(RICH) or WIDGET_VIEW in data:
                blocks.append(out)
            elif "text/plain" in data:
                text.append(data["text/plain"] + "\n")
    flush()
    return blocks


def _minutes(cells) -> float:
    """Time estimate for a slide: reading its prose aloud (about 110 words a minute), a minute for each
    picture, half a minute for each table, printed block or piece of code; at least one minute; to the
    half minute."""
    words, extra = 0, 0.0
    for cell in cells:
        if _kind(cell) == "notes":
            continue
        if cell.cell_type == "markdown":
            words += len(re.findall(r"[A-Za-z]+", cell.source))
        elif cell.cell_type == "code":
            extra += 0.5 if HIDE not in _tags(cell) else 0.0
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                extra += 1.0 if any(k.startswith("image/") for k in data) or "metalstm-frames" in \
                    str(data.get("text/html", "")) else 0.5
    return max(1.0, math.ceil((words / 110 + extra) * 2) / 2)


def _title(cells) -> str:
    for cell in cells:
        if cell.cell_type == "markdown" and _kind(cell) != "notes":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def _groups(cells) -> list[list]:
    groups = []
    for cell in cells:
        if not groups or _kind(cell) in ("slide", "subslide"):
            groups.append([])
        groups[-1].append(cell)
    return groups


def minutes_note(minutes: float) -> str:
    return f"**About {minutes:g} min.**"


def _objectives(source: str) -> list[str]:
    """The bullets under 'After this notebook you will be able to' in the first cell."""
    if OBJECTIVES not in source:
        return []
    after = source.split(OBJECTIVES, 1)[1]
    items, current = [], None
    for line in after.splitlines()[1:]:
        if line.startswith("- "):
            current = line[2:].strip()
            items.append(current)
        elif current is not None and line.startswith("  ") and line.strip():
            items[-1] += " " + line.strip()
        elif items and not line.strip():
            break
    return [re.sub(r"[;.]$|; and$|, and$", "", item).rstrip(";, ") for item in items]


def prepare(nb, frames: str | None = None):
    """The notebook reshaped for projection (see the module docstring); `nb` is not modified.
    `frames`: the HTML that replaces a widget output (frames_html), or None to keep the widget note."""
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb.cells:
        kind, tags = _kind(cell), _tags(cell)
        if kind == "skip" or SKIP in tags:
            continue
        if cell.cell_type == "markdown":
            pieces = [p for piece in split_markdown(cell.source) for p in fit_markdown_tables(piece)]
            for j, piece in enumerate(pieces):
                new = copy.deepcopy(cell)
                new.source = piece
                if j:
                    _set_kind(new, "-" if kind != "notes" else "notes")
                cells.append(new)
        elif cell.cell_type == "code":
            cell.source = MARKER.sub("", cell.source)           # "# NBVAL_CHECK_OUTPUT": for the tests, not the room
            shown, blocks = code_shown(cell), _outputs(cell, frames)
            pieces = []
            if shown:
                head = copy.deepcopy(cell)
                head.outputs = []
                pieces.append(head)
            for out in blocks:
                new = copy.deepcopy(cell)
                new.outputs = [out]
                new.metadata["tags"] = sorted(_tags(new) | {HIDE})
                _set_kind(new, "-")
                pieces.append(new)
            if not pieces:
                continue
            _set_kind(pieces[0], kind)
            cells.append(pieces[0])
            cells.extend(pieces[1:])
        else:
            cells.append(cell)
    # a lead-in ("printed from the package itself:") keeps what it introduces on its slide: the next cell
    # does not start a new one (a slide then too tall is split in the browser, the lead-in going along)
    for prev, cell in zip(cells, cells[1:]):
        if prev.cell_type == "markdown" and _kind(prev) != "notes" and prev.source.rstrip().endswith(":") and \
                cell.cell_type == "code" and _kind(cell) in ("slide", "subslide"):
            _set_kind(cell, "-")
    # a dropped cell that started a slide passes the start on
    for i, cell in enumerate(cells):
        if i == 0 and _kind(cell) not in ("slide",):
            _set_kind(cell, "slide")
    cells = _with_agenda_and_recap(_with_notes(_with_titles(cells)))
    seen = set()
    for i, cell in enumerate(cells):               # copies and new cells get ids of their own
        if cell.get("id") in seen or "id" not in cell:
            cell["id"] = f"deck-{i}"
        seen.add(cell["id"])
    nb.cells = cells
    return nb


MARKDOWN_TABLE = re.compile(r"^\s*\|?\s*:?-{3,}\s*\|", re.MULTILINE)     # a Markdown table's rule line


def _shows_result(cell) -> bool:
    """Whether a cell puts a figure or a table on its slide."""
    if cell.cell_type == "markdown":
        return _kind(cell) != "notes" and bool(MARKDOWN_TABLE.search(cell.source))
    return _shows_table(cell) or any(any(k.startswith("image/") for k in o.get("data", {})) or
                                     "metalstm-frames" in str(o.get("data", {}).get("text/html", ""))
                                     for o in cell.get("outputs", []))


def _titled(group) -> bool:
    """Whether a slide says what it shows before it shows it: a heading, or a paragraph that opens with bold
    words, ahead of its first figure or table."""
    for c in group:
        first = next((o.get("data", {}) for o in c.get("outputs", [])), {}) if c.cell_type == "code" else {}
        if str(first.get("text/markdown", "")).lstrip().startswith("**"):      # a caption written by the code
            return True
        if c.cell_type == "markdown" and _kind(c) != "notes":
            heading = re.search(r"^#{1,4} ", c.source, re.MULTILINE)
            table = MARKDOWN_TABLE.search(c.source)
            if c.source.lstrip().startswith("**") or (heading and (table is None or heading.start() < table.start())):
                return True                                                   # (a heading above its own table)
        if _shows_result(c):
            return False
    return False


def _with_titles(cells) -> list:
    """A slide that shows a figure or a table but has no heading (nor a paragraph led by bold words) gets
    the nearest title before it (a heading, or a caption: _titles_in), marked "(continued)": every
    figure and table slide says what it shows. A slide that shows only figures takes the nearest
    heading: a caption before it names a table, not the figure."""
    out, last, heading = [], "", ""
    for group in _groups(cells):
        heading_after = heading
        for cell in group:                              # the notebook's own headings (not the titles added here)
            heading_after = (_titles_in(cell, captions=False) or [heading_after])[-1]
        if out and last and any(_shows_result(c) for c in group) and not _titled(group):
            figures_only = not any(_shows_table(c) for c in group)
            title = _markdown(f"### {heading if figures_only and heading else last} (continued)", _kind(group[0]))
            _set_kind(group[0], "-")
            group = [title] + group
        for cell in group:
            last = (_titles_in(cell) or [last])[-1]
        heading = heading_after
        out.extend(group)
    return out


def _shows_table(cell) -> bool:
    """Whether a cell puts a table on its slide (a Markdown or HTML table)."""
    if cell.cell_type == "markdown":
        return _shows_result(cell)
    return any("<table" in str(o.get("data", {}).get("text/html", "")) or
               MARKDOWN_TABLE.search(str(o.get("data", {}).get("text/markdown", ""))) for o in cell.get("outputs", []))


def _titles_in(cell, captions: bool = True) -> list[str]:
    """The titles a cell shows, in order: its headings and (captions=True) the bold words that open a
    paragraph (a caption), of a markdown cell or of the Markdown a code cell writes (a table's caption)."""
    if cell.cell_type == "markdown" and _kind(cell) != "notes":
        texts = [cell.source]
    elif cell.cell_type == "code":
        texts = [str(o.get("data", {}).get("text/markdown", "")) for o in cell.get("outputs", [])]
    else:
        return []
    titles = []
    for text in texts:
        for para in re.split(r"\n\s*\n", text):
            for line in para.strip().splitlines()[:1] + [ln for ln in para.splitlines()[1:] if ln.startswith("#")]:
                heading = re.match(r"^#{1,4} (.+)", line)
                bold = re.match(r"^\*\*(.+?)\*\*", line.strip())
                if heading or (bold and captions):
                    title = (heading or bold).group(1).strip()
                    titles.append(re.sub(r"[.:]$", "", re.sub(r" \(continued\)$", "", title)))
    return titles


ASK = re.compile(r"ask the room|before showing|predict", re.IGNORECASE)


def _with_notes(cells) -> list:
    out = []
    for group in _groups(cells):
        minutes = _minutes(group)
        notes = [c for c in group if _kind(c) == "notes"]
        if any(ASK.search(n.source) for n in notes):
            # the notes put a question to the room: the slide's results come in on the next key press
            shown = next((c for c in group[1:] if c.cell_type == "code" and c.get("outputs") and _kind(c) == "-"), None)
            if shown is not None:
                _set_kind(shown, "fragment")
        if notes:
            notes[0].source = minutes_note(minutes) + " " + notes[0].source
        else:
            title = _title(group)
            hint = f" {title}: say what it shows, then move on." if title else " Say what it shows, then move on."
            group.append(_markdown(minutes_note(minutes) + hint, "notes"))
        group[0].metadata["metalstm_minutes"] = minutes
        out.extend(group)
    return out


def sections(cells) -> list[tuple[str, float]]:
    """(section heading, minutes) of a prepared deck: a section starts at a `## ` heading that starts a
    slide; the title slide and what precedes the first section count as 'Introduction'."""
    out = []
    for group in _groups(cells):
        first = next((c for c in group if c.cell_type == "markdown" and _kind(c) != "notes"), None)
        heading = first.source.splitlines()[0] if first is not None and first.source else ""
        if _kind(group[0]) == "slide" and heading.startswith("## "):
            out.append((heading[3:].strip(), 0.0))
        elif not out:
            out.append(("Introduction", 0.0))
        out[-1] = (out[-1][0], out[-1][1] + group[0].metadata.get("metalstm_minutes", 0.0))
    return out


def _with_agenda_and_recap(cells) -> list:
    groups = _groups(cells)
    parts = [(title, minutes) for title, minutes in sections(cells)
             if title not in ("Introduction", "Exercises")]
    total = sum(m for _, m in sections(cells))
    agenda = "## Agenda\n\n" + "\n".join(f"1. {title} ({minutes:g} min)" for title, minutes in parts)
    agenda_cells = [_markdown(agenda, "slide"),
                    _markdown(minutes_note(1) + f" The plan of this lecture: about {total:g} minutes of slides "
                              "in all (each slide's notes give its own estimate).", "notes")]
    # the objectives: in the title slide's text (the first cell, which split_markdown may have cut in pieces)
    goals = _objectives("\n\n".join(c.source for c in (groups[0] if groups else []) if c.cell_type == "markdown"))
    recap = "## Recap\n\nYou can now:\n\n" + "\n".join(f"- {g}" for g in goals) if goals else \
        "## Recap\n\n" + "\n".join(f"- {title}" for title, _ in parts)
    recap_cells = []
    for j, piece in enumerate(split_markdown(recap)):          # every piece of a long recap has its notes
        recap_cells += [_markdown(piece, "subslide" if j else "slide"), _markdown(
            minutes_note(2) + " Ask the room which of these they could not do yet; point to the exercises."
            if j == 0 else "**Continued** (within the 2 min of the slide before).", "notes")]
    agenda_cells[0].metadata["metalstm_minutes"], recap_cells[0].metadata["metalstm_minutes"] = 1.0, 2.0
    out = list(groups[0]) + agenda_cells
    placed = False
    for group in groups[1:]:
        if not placed and group[0].cell_type == "markdown" and group[0].source.startswith("## Exercises"):
            out.extend(recap_cells)
            placed = True
        out.extend(group)
    if not placed:
        out.extend(recap_cells)
    return out


DECK_STYLE = {"body_px": BODY_PX, "code_px": CODE_PX, "image_px": 600}


def has_widget(nb) -> bool:
    """Whether the notebook shows an explorer: a widget output with a picture (a progress bar,
    a widget without one, is left out of the deck and needs no frames)."""
    return any(WIDGET_VIEW in out.get("data", {}) and "image/png" in out.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []))


def explorer_frames(config: str = "glyphs-5shot", layer: str | None = None, dpi: int = 90) -> str:
    """Notebook 06's inner-loop explorer as pre-rendered frames (frames_html): meta-validation episode 0
    of the shipped `config` meta-learner, steps t = 0..T, one picture each, drawn by
    InnerLoopExplorer.static_figure (the picture the widget shows)."""
    import torch

    from metalstm.episodes import sampler_for
    from metalstm.model import load_trained
    from metalstm.paths import shipped_checkpoint
    from metalstm.viz import InnerLoopExplorer
    from metalstm.viz.explorer import figure_png

    torch.set_num_threads(1)
    learner, meta, cfg, _ = load_trained(shipped_checkpoint(config))
    explorer = InnerLoopExplorer(learner, meta, sampler_for(cfg, "val"), cfg, episodes=1)
    layer = layer or explorer.layers[0]
    pngs = [figure_png(explorer.static_figure(episode=0, layer=layer, step=t), dpi=dpi) for t in range(cfg.steps + 1)]
    return frames_html(pngs, caption=f"Right arrow: the next step t (0 = c<sub>0</sub> ... {cfg.steps}); "
                                     "the live explorer with sliders: <code>make lab</code>, notebook 06.")
