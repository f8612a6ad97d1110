"""`ember keys create|list|update|revoke|migrate`: API keys of the service.

The keys database is the Serve config's `access.database_url` (default: SQLite
under $EMBER_HOME/access); `--database-url` points at another. A key is
printed once, at creation; only its SHA-256 is stored.
"""

from __future__ import annotations

import time


def register(commands) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    keys.add_argument("--database-url", help="SQLAlchemy URL of the keys database "
                      "(default: SQLite under $EMBER_HOME/access)")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="a new key, printed once")
    create.add_argument("name")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens (prompt + completion) per minute")
    create.add_argument("--budget-usd", type=float, help="spend limit in USD")
    create.add_argument("--models", nargs="+", help="models it may use (patterns: 'rag*')")
    create.add_argument("--admin", action="store_true")
    create.set_defaults(func=run_create)
    sub.add_parser("list", help="all keys, with limits").set_defaults(func=run_list)
    update = sub.add_parser("update", help="change a key's limits, models or name (the key "
                            "text stays); 'none' removes a limit")
    update.add_argument("name")
    update.add_argument("--rpm", type=_or_none(int), help="requests per minute, or none")
    update.add_argument("--tpm", type=_or_none(int), help="tokens per minute, or none")
    update.add_argument("--budget-usd", type=_or_none(float), help="spend limit, or none")
    update.add_argument("--models", nargs="+", help="models it may use (patterns); "
                        "'--models none': every model")
    update.add_argument("--name", dest="new_name", help="a new name for the key")
    update.set_defaults(func=run_update)
    revoke = sub.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    revoke.set_defaults(func=run_revoke)
    sub.add_parser("migrate", help="upgrade the database schema").set_defaults(func=run_migrate)


def _url(args) -> str:
    from ember.access.store import default_url

    return args.database_url or default_url()


def run_create(args) -> int:
    from ember.access.keys import create_key

    key, record = create_key(_url(args), args.name, rpm=args.rpm, tpm=args.tpm,
                             budget_usd=args.budget_usd, models=args.models, admin=args.admin)
    print(key)
    print(f"created key '{record.name}' ({_limits(record)}); this is the only time it is shown",
          flush=True)
    return 0


def run_list(args) -> int:
    from ember.access.keys import list_keys

    keys = list_keys(_url(args))
    if not keys:
        print("no keys (`ember keys create NAME` makes one)")
    for k in keys:
        state = "revoked " + _when(k.revoked_at) if k.revoked_at else "active"
        print(f"{k.name:<24} {k.prefix}...  {state:<28} created {_when(k.created_at)}  "
              f"{_limits(k)}")
    return 0


def run_update(args) -> int:
    from ember.access.keys import UNCHANGED, update_key

    models = args.models
    if models is not None and [m.lower() for m in models] == ["none"]:
        models = None
    elif models is None:
        models = UNCHANGED
    # an option not given stays as it is; 'none' removes the limit
    changes = {field: UNCHANGED if value is None else None if value == _NONE else value
               for field, value in (("rpm", args.rpm), ("tpm", args.tpm),
                                    ("budget_usd", args.budget_usd))}
    record = update_key(_url(args), args.name, new_name=args.new_name, models=models,
                        **changes)
    print(f"updated key '{record.name}' ({_limits(record)}); running replicas apply it "
          f"within their key cache time (access.key_cache_s, 2 s by default)")
    return 0


def run_revoke(args) -> int:
    from ember.access.keys import revoke

    record = revoke(_url(args), args.name)
    print(f"revoked key '{record.name}' ({record.prefix}...); running replicas refuse it "
          f"within their key cache time (access.key_cache_s, 2 s by default)")
    return 0


def run_migrate(args) -> int:
    from ember.access.store import head_revision, migrate

    migrate(_url(args))
    print(f"keys database at schema revision {head_revision()}")
    return 0


_NONE = "none"  # what `_or_none` parses 'none' to (argparse's None: not given)


def _or_none(kind):
    """An argparse type: a number, or 'none' (the limit removed)."""
    def parse(text: str):
        return _NONE if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__
    return parse


def _limits(k) -> str:
    parts = [f"rpm {k.rpm}" if k.rpm else "", f"tpm {k.tpm}" if k.tpm else "",
             f"budget ${k.budget_usd:g}" if k.budget_usd else "",
             f"models {','.join(k.models)}" if k.models else "", "admin" if k.admin else ""]
    return ", ".join(p for p in parts if p) or "no limits"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
