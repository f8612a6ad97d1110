"""The local admin key: made once by `ember up`, read by Ember's CLI and SDK.

It lives in `$EMBER_HOME/access/admin-key` (mode 0600), beside the database
that holds its hash, so the README's commands work with auth on and nothing
typed. Other users get their own keys with `ember keys create`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ember.access.keys import KeyLookup, create_key, list_keys
from ember.access.store import migrate


def admin_key_file() -> Path:
    from ember.config.paths import ember_home

    return ember_home() / "access" / "admin-key"


def ensure_admin_key(url: str, progress=print) -> Path:
    """Create the admin key unless the file holds a live one; the file's path."""
    migrate(url)
    path = admin_key_file()
    if path.is_file() and KeyLookup(url, cache_s=0).find(path.read_text().strip()):
        return path
    taken = {k.name for k in list_keys(url)}
    name = "admin" if "admin" not in taken else f"admin-{int(time.time())}"
    key, _ = create_key(url, name, admin=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    progress(f"created the local admin key '{name}' in {path} (the ember CLI and SDK use it; "
             f"`ember keys create NAME` makes keys for others)")
    return path
