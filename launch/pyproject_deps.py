"""Print pyproject's requirement strings for the named packages, one a line (used by setup.sh);
with ``--extras``, the names of all optional-dependency groups, comma-separated.

Keeps one source of truth for version ranges: setup.sh installs torch & co. first, from these lines.
"""

import re
import sys

import tomllib

pyproject, *names = sys.argv[1:]
with open(pyproject, "rb") as f:
    project = tomllib.load(f)["project"]
if names == ["--extras"]:
    print(",".join(project.get("optional-dependencies", {})))
    sys.exit(0)
for dep in project["dependencies"]:
    name = re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0].lower()
    if name in names:
        print(dep.replace(" ", ""))
