"""Print pyproject's requirement strings for the named packages, one a line (used by setup.sh).

Keeps one source of truth for version ranges: setup.sh installs torch & co. first, from these lines.
"""

import re
import sys

import tomllib

pyproject, *names = sys.argv[1:]
with open(pyproject, "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    name = re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0].lower()
    if name in names:
        print(dep.replace(" ", ""))
