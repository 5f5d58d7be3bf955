"""Writes dvc_plots.html: the page `dvc plots show` fills (`.dvc/config`: plots.html_template), with the
charting libraries of this folder inlined, so that the plots render with no network. DVC's own page
loads them from a CDN, and offline it stays blank.

    .venv/bin/python vendor/vega/build.py           # exit 1, saying what, when a library or the page differs
    .venv/bin/python vendor/vega/build.py --write   # rewrite dvc_plots.html from the .min.js files here

dvc_render fills the page by plain text replacement of `{plot_divs}` and `{refresh_tag}` (not
`str.format`), so the braces of the JavaScript are safe. The page has no `{scripts}`: DVC would put
its CDN <script> tags there. README.md says where the files come from and how to update them.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE = HERE / "dvc_plots.html"

# (npm package, version, its build/ file kept here, sha256 of that file as npm ships it)
LIBRARIES = (
    ("vega", "5.33.1", "vega.min.js", "463f3db6a40b20e9747b4ed38f37ed0add508838f9141b1cf8366784b07b30c8"),
    ("vega-lite", "5.23.0", "vega-lite.min.js", "58c27358e26f2d319cf62f45bc17a4c8362f08645001df2ec8d341eee4097c7f"),
    ("vega-embed", "6.29.0", "vega-embed.min.js", "12d02acfbe3ec59ef9a37dd4822a2e04e2961b5bbb671bbe661d2221715b99da"),
)
# What dvc_render replaces anywhere in the page: a library holding one would be corrupted.
PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")

HEAD = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- graft's page for `dvc plots show`: DVC's default page with the libraries inlined instead of loaded
         from a CDN. Written by vendor/vega/build.py from the files beside it; edit that, not this. -->
"""
TAIL = """    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def problems() -> list[str]:
    """What is wrong with the vendored libraries (empty when each is the file npm ships and safe to inline)."""
    found = []
    for name, version, filename, sha256 in LIBRARIES:
        data = (HERE / filename).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            found.append(f"vendor/vega/{filename} is not build/{filename} of npm's {name}@{version} (sha256 differs)")
        text = data.decode("utf-8")
        if "</script" in text.lower():
            found.append(f"vendor/vega/{filename} contains '</script', which would end its inline <script> early")
        found += [f"vendor/vega/{filename} contains {p}, which dvc_render would replace"
                  for p in PLACEHOLDERS if p in text]
    return found


def page() -> str:
    """The template: each library inlined after a comment naming it, its version and its copyright."""
    parts = [HEAD]
    for name, version, filename, _ in LIBRARIES:
        copyright_line = (HERE / f"LICENSE.{name}").read_text(encoding="utf-8").splitlines()[0].rstrip(".")
        parts.append(f"    <!-- {name} {version} (npm {name}@{version}, build/{filename}). BSD-3-Clause: "
                     f"{copyright_line}. See vendor/vega/LICENSE.{name}. -->\n")
        parts.append(f"    <script>\n{(HERE / filename).read_bytes().decode('utf-8').rstrip()}\n    </script>\n")
    parts.append(TAIL)
    return "".join(parts)


def main(argv: list[str]) -> int:
    if set(argv) - {"--write"}:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    found = problems()
    if found:
        print("\n".join(found), file=sys.stderr)
        return 1
    wanted = page()
    if "--write" in argv:
        PAGE.write_bytes(wanted.encode("utf-8"))
        print(f"{PAGE}: written")
        return 0
    if not PAGE.exists() or PAGE.read_bytes() != wanted.encode("utf-8"):
        print(f"{PAGE} differs from the libraries beside it; run `.venv/bin/python vendor/vega/build.py --write`",
              file=sys.stderr)
        return 1
    print(f"{PAGE}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
