"""MkDocs hook (mkdocs.yml `hooks:`): a page's `<!-- notebook: PATH -->` line becomes the notebook at
PATH, cells and committed outputs, as Markdown: text cells as they are, code in fenced blocks,
printed text in text blocks, tables as their HTML, figures as inline PNGs. A notebook that holds an
error output, or has no outputs at all, fails the build: its page would show a broken or empty run.
"""

import html
import re
from pathlib import Path

import nbformat

MARKER = re.compile(r"^<!--\s*notebook:\s*(\S+)\s*-->\s*$", re.M)
ROOT = Path(__file__).resolve().parents[1]


def _output(output) -> str:
    if output.output_type == "error":
        raise ValueError(f"the notebook holds an error output ({output.ename}: {output.evalue}): run it again")
    if output.output_type == "stream":
        return "```text\n" + output.text.rstrip("\n") + "\n```"
    data = output.get("data", {})
    if "image/png" in data:
        return f'<img alt="figure" src="data:image/png;base64,{data["image/png"].strip()}">'
    if "text/html" in data:
        return '<div class="notebook-output" markdown="0">\n' + data["text/html"].strip() + "\n</div>"
    if "text/plain" in data:
        return "```text\n" + html.unescape(data["text/plain"]).rstrip("\n") + "\n```"
    return ""


def _demote(markdown: str) -> str:
    """Headings one level down (the page has its own title), code fences left alone."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        fenced ^= line.lstrip().startswith("```")
        lines.append("#" + line if not fenced and re.match(r"#+ ", line) else line)
    return "\n".join(lines)


def render(path: Path) -> str:
    notebook = nbformat.read(path, as_version=4)
    parts, outputs = [], 0
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            parts.append(_demote(cell.source))
        elif cell.cell_type == "code":
            parts.append("```python\n" + cell.source + "\n```")
            outputs += len(cell.outputs)
            parts += [text for text in map(_output, cell.outputs) if text]
    if not outputs:
        raise ValueError(f"{path} is committed without outputs: run it (docs/ablations.md) before building the site")
    return "\n\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return MARKER.sub(lambda match: render(ROOT / match.group(1)), markdown)
