"""`ember models prepare|list|adapters|remove`."""

from __future__ import annotations

from ember.models.catalogue import CATALOGUE


def register(commands) -> None:
    models = commands.add_parser("models", help="the model catalogue")
    sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    prepare = sub.add_parser("prepare", help="prepare embedded models (idempotent)")
    prepare.add_argument("names", nargs="*", help="catalogue names (default: all)")
    prepare.add_argument("--force", action="store_true", help="rebuild even if verified")
    prepare.set_defaults(func=run_prepare)
    listing = sub.add_parser("list", help="list catalogue models and their state")
    listing.set_defaults(func=run_list)
    adapters = sub.add_parser("adapters", help="list the LoRA adapters served on base models")
    adapters.set_defaults(func=run_adapters)
    remove = sub.add_parser("remove", help="stop serving a LoRA adapter (`ember serve-model` "
                                           "registered it)")
    remove.add_argument("name")
    remove.set_defaults(func=run_remove)


def run_prepare(args) -> int:
    from ember.models.prepare import ensure_prepared

    for name in args.names or list(CATALOGUE):
        entry = CATALOGUE.get(name)
        if entry is None:
            print(f"unknown catalogue model '{name}'; known: {', '.join(CATALOGUE)}")
            return 2
        if entry.kind == "embedder":
            path = entry.local_dir()
            state = "ready" if (path / "config.json").is_file() else "MISSING"
            print(f"{name}: {state}, shipped by {entry.package} at {path}")
            continue
        ensure_prepared(entry, force=args.force)
    return 0


def run_list(args) -> int:
    from ember.models.prepare import verify_folder

    print(f"{'name':<24} {'kind':<9} {'state':<12} path")
    for entry in CATALOGUE.values():
        try:
            path = entry.local_dir()
            problem = (
                (None if (path / "config.json").is_file() else "missing")
                if entry.kind == "embedder"
                else verify_folder(path)
            )
            state = "ready" if problem is None else "not ready"
        except Exception as exc:  # noqa: BLE001 - listed, not raised: show every row
            path, state = f"({exc})", "missing"
        print(f"{entry.name:<24} {entry.kind:<9} {state:<12} {path}")
    return 0


def run_adapters(args) -> int:
    from ember.models.adapters import adapters_dir, list_adapters

    found = list_adapters()
    if not found:
        print(f"no adapters are registered (in {adapters_dir()})")
        return 0
    print(f"{'name':<32} {'base':<28} {'rank':>4}  path")
    for adapter in found:
        print(f"{adapter.name:<32} {adapter.base:<28} {adapter.rank:>4}  {adapter.path}")
        if adapter.load_error:
            print(f"  LOAD FAILED (not retried): {adapter.load_error}")
    return 0


def run_remove(args) -> int:
    """Unregister: replicas that loaded it keep it until evicted, but no longer route to it."""
    from ember.models.adapters import remove_adapter

    remove_adapter(args.name)
    print(f"adapter '{args.name}' removed: /v1/models no longer lists it and requests for it "
          f"get 404 (within 2 s)")
    return 0
