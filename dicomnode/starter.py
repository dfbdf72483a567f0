"""``dicomnode init``: a configuration and one working rule, so the first hour ends in a result.

The files are text with comments, meant to be read and edited: ``node.yaml`` names every
section an administrator touches first, with the defaults spelled out, and
``rules/ct-tissue.yaml`` routes every CT to the reference tissue pipeline and its SEG and
SR to the destination ``pacs``, whose address is the one line to fill in. Paths in
``node.yaml`` are relative to its folder, so the folder can move.
"""

from __future__ import annotations

import os
from pathlib import Path

from dicomnode.errors import ConfigError

NODE_YAML = """\
# dicomnode configuration, written by `dicomnode init`. Every key has a default; the
# README's "Configure it" lists them all, docs/admin-guide.md explains them. Paths are
# relative to this file's folder. Check an edit with: dicomnode config check --config node.yaml

node:
  ae_title: DICOMNODE        # the AE title the PACS sends to (called AE title)
  port: 11112                # `dicomnode serve --port N` overrides it for a trial

storage:
  path: var                  # received instances (spool) and the SQLite index

# Who may send to us. Empty: anyone who calls our AE title. For example:
#   callers: [PACS@10.0.0.5, CT_SCANNER_1]
callers: []

# Where results and forwarded series go. FILL IN your PACS's AE title, host and port,
# and tell the PACS about us (AE DICOMNODE, this host, port 11112).
destinations:
  pacs: {ae_title: PACS, host: 127.0.0.1, port: 4242}

rules_dir: rules             # one rule file per job; reloaded within seconds of an edit

# Series are complete when no instance came for this long (or 2 s after the sender
# closes its association): docs/receiving.md "Series completion".
completion:
  quiet_seconds: 30

admin:
  port: 8080                 # the web page and API: http://127.0.0.1:8080/ (loopback only)
"""

CT_RULE_YAML = """\
# Written by `dicomnode init`. Every CT series goes through the reference tissue pipeline
# (fat, soft tissue and bone by HU ranges: a demonstration, not a clinical tool); its SEG
# and SR go to the destination `pacs` of node.yaml. docs/rules.md explains the format;
# `dicomnode rules explain --config node.yaml FOLDER` shows what a rule does with a series.
- name: ct-tissue-composition
  match:
    Modality: CT
    ImageCount: {min: 5}
  pipeline: ct-tissue-reference
  send_to: [pacs]
"""

NODE_FILE = "node.yaml"
RULE_FILE = Path("rules") / "ct-tissue.yaml"


def write_starter(folder: Path) -> list[Path]:
    """Write ``node.yaml`` and ``rules/ct-tissue.yaml`` into ``folder``; never overwrite."""
    targets = [folder / NODE_FILE, folder / RULE_FILE]
    present = [str(path) for path in targets if path.exists()]
    if present:
        raise ConfigError(
            f"{', '.join(present)}: already there; init never overwrites (edit it, or init "
            "another folder)"
        )
    (folder / RULE_FILE).parent.mkdir(parents=True, exist_ok=True)
    for path, text in zip(targets, (NODE_YAML, CT_RULE_YAML), strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
    return targets
