"""Pool files: the devices of a DevicePool (and its options) from TOML, and the names
given to devices opened from URLs."""
from __future__ import annotations

import re
from pathlib import Path

from .device import open_device
from .toml_file import read_toml


def unique_names(urls) -> list:
    seen: dict = {}
    out = []
    for u in urls:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", u.split("://", 1)[-1]).strip("_") or "device"
        k = seen.get(base, 0)
        seen[base] = k + 1
        out.append(base if k == 0 else f"{base}-{k}")
    # a URL given once keeps its plain name; repeated ones are numbered from the second
    return out


_POOL_KEYS = {"health_interval", "retire_after", "max_attempts"}
_DEVICE_KEYS = {"url", "name", "count", "targets", "identity", "known_hosts", "trust_on_first_use",
                "python"}


def load_pool_toml(path) -> tuple:
    """(devices, pool options) from a TOML file:

        health_interval = 5          # optional pool options
        [[device]]
        url = "ssh://pi@raspberrypi.local"
        name = "pi4-a"               # optional
        targets = ["rpi4"]           # optional: only these targets
        identity = "~/.ssh/id_ed25519"
        [[device]]
        url = "local"
        count = 2                    # two agents on this machine
    """
    p = Path(path)
    data = read_toml(p, "pool file")
    entries = data.pop("device", [])
    unknown = set(data) - _POOL_KEYS
    if unknown:
        raise ValueError(f"pool file {p}: unknown keys {sorted(unknown)}; known: {sorted(_POOL_KEYS)} "
                         f"and [[device]] tables")
    if not entries:
        raise ValueError(f"pool file {p}: no [[device]] tables")
    devices, names = [], set()
    for e in entries:
        bad = set(e) - _DEVICE_KEYS
        if bad or "url" not in e:
            raise ValueError(f"pool file {p}: device {e}: needs 'url'; unknown keys {sorted(bad)}; "
                             f"known: {sorted(_DEVICE_KEYS)}")
        tofu = e.get("trust_on_first_use", False)
        if not isinstance(tofu, bool):
            # the opt-in to accept unknown host keys is only the boolean true: a string
            # such as "no" must not turn it on
            raise ValueError(f"pool file {p}: device {e['url']}: trust_on_first_use must be "
                             f"true or false, got {tofu!r}")
        count = int(e.get("count", 1))
        base = e.get("name") or unique_names([e["url"]])[0]
        for k in range(count):
            name = base if count == 1 else f"{base}-{k}"
            while name in names:
                name += "'"
            names.add(name)
            devices.append(open_device(e["url"], name=name, targets=e.get("targets"),
                                       identity=e.get("identity"), known_hosts=e.get("known_hosts"),
                                       trust_on_first_use=tofu,
                                       **_python_kw(e)))
    return devices, dict(data)


def _python_kw(entry) -> dict:
    if "python" not in entry:
        return {}
    if entry["url"].startswith("ssh://"):
        from .ssh import SshOptions
        return {"ssh_options": SshOptions(python=entry["python"])}
    return {"python": entry["python"]}
