"""PixelMed's DicomSRValidator, run on an SR file (Debian: ``apt-get install pixelmed-apps``).

It checks an SR against the templates (TID 1500 and what it includes), which dciodvfy
does not. The JDK's XML limits stop its compiled stylesheet from loading ("accumulated
'10,001' operators"), so they are lifted for the run, as Debian's own
``/usr/bin/DicomSRValidator`` script does not.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

JAR = Path("/usr/share/java/pixelmed.jar")
_LIMITS = (
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)


def pixelmed_java() -> str | None:
    """The java to run the validator with, or None when PixelMed is not installed."""
    java = shutil.which("java")
    return java if java is not None and JAR.is_file() else None


def sr_errors(path: Path, java: str, root_template: bool = True) -> tuple[list[str], str]:
    """The validator's error lines for ``path``, and its whole report.

    ``root_template``: the SR follows a template PixelMed knows (TID 1500); without one
    (a plain document such as the "AI not run" report) it checks the IOD and every
    content item it can.
    """
    done = subprocess.run(
        [java, *_LIMITS, "-cp", str(JAR), "com.pixelmed.validate.DicomSRValidator", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = done.stdout + done.stderr
    expected = "Found Root Template" if root_template else "IOD validation complete"
    if expected not in report:
        raise AssertionError(f"DicomSRValidator did not validate {path.name}:\n{report}")
    return [line for line in report.splitlines() if line.startswith("Error")], report
