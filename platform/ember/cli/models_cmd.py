"""`ember models prepare|list|adapters|remove` and the lifecycle of fine-tuned versions:
`ember models promote|rollout|rollback|rollouts` (ember.cluster.rollout)."""

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
    register_lifecycle(sub)


def register_lifecycle(sub) -> None:
    promote = sub.add_parser("promote", help="make a registered version the champion, if its "
                             "evaluation is not worse than its base (the promotion gate)")
    promote.add_argument("registered", help="the MLflow registered model")
    promote.add_argument("version")
    _gate_args(promote)
    promote.set_defaults(func=run_promote)
    rollout = sub.add_parser("rollout", help="send a share of API keys to a new version, step "
                             "by step, rolling back on errors or slow first tokens")
    rollout.add_argument("name", help="the served name (e.g. lantern-keeper)")
    rollout.add_argument("--to", required=True, help="a version of the name's registered model "
                         "(or models:/NAME/VERSION)")
    rollout.add_argument("--steps", default="10,50,100",
                         help="percent of keys per step; 100 completes (default 10,50,100)")
    rollout.add_argument("--interval", type=float, default=60.0,
                         help="seconds per step (default 60)")
    rollout.add_argument("--poll", type=float, default=2.0, help="seconds between checks")
    rollout.add_argument("--max-error-rate", type=float, default=0.05,
                         help="roll back above this share of failed canary requests (0.05)")
    rollout.add_argument("--max-ttft-p95-ms", type=float,
                         help="roll back above this canary TTFT p95 (default: 1.5 x the "
                              "stable version's + 50 ms)")
    rollout.add_argument("--min-requests", type=int, default=10,
                         help="canary requests needed before judging (default 10)")
    rollout.add_argument("--database-url", help="keys database with the usage rows "
                         "(default: $EMBER_HOME/access)")
    _gate_args(rollout)
    rollout.set_defaults(func=run_rollout)
    back = sub.add_parser("rollback", help="stop a rollout (its canary to 0%%), or go back to "
                          "the version before the last completed one")
    back.add_argument("name")
    back.add_argument("--reason", default="rolled back by hand")
    back.add_argument("--tracking-uri", help="MLflow tracking URI (default: Ember's SQLite)")
    back.set_defaults(func=run_rollback)
    listing = sub.add_parser("rollouts", help="served names and their versions' shares")
    listing.set_defaults(func=run_rollouts)


def _gate_args(parser) -> None:
    from ember.models.promotion import DEFAULT_MARGIN

    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="how much worse than its base a version may be: a fraction of "
                             f"perplexity, points of a score (default {DEFAULT_MARGIN})")
    parser.add_argument("--force", action="store_true",
                        help="serve a version that fails the gate (recorded on the version)")
    parser.add_argument("--reason", help="why, recorded with --force")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: Ember's SQLite)")
    parser.add_argument("--app", default="ember", help="Serve application (default ember)")
    parser.add_argument("--address", help="Ray dashboard (default http://127.0.0.1:8265)")


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
    from ember.models.rollouts import adapters_in_use

    if (rollout := adapters_in_use().get(args.name)) is not None:
        print(f"'{args.name}' serves a version of '{rollout}' (`ember models rollouts`); roll "
              f"it back or out first")
        return 2
    remove_adapter(args.name)
    print(f"adapter '{args.name}' removed: /v1/models no longer lists it and requests for it "
          f"get 404 (within 2 s)")
    return 0


def _plan(args):
    from ember.access.version_health import Thresholds
    from ember.cluster.rollout import RolloutPlan, parse_steps

    thresholds = Thresholds(max_error_rate=args.max_error_rate,
                            max_ttft_p95_ms=args.max_ttft_p95_ms,
                            min_requests=args.min_requests)
    return RolloutPlan(steps=parse_steps(args.steps), interval_s=args.interval,
                       poll_s=args.poll, thresholds=thresholds, margin=args.margin,
                       force=args.force, reason=args.reason)


def run_promote(args) -> int:
    from ember.cli.cluster_cmd import DASHBOARD
    from ember.cluster.rollout import promote
    from ember.models.promotion import Registry

    switched = promote(args.address or DASHBOARD, Registry(args.tracking_uri), args.registered,
                       args.version, args.app, args.margin, args.force, args.reason)
    if not switched:
        print(f"no served name follows '{args.registered}' yet: serve the champion with "
              f"`ember serve-model models:/{args.registered}@champion --name NAME`")
    return 0


def run_rollout(args) -> int:
    from ember.access.store import default_url
    from ember.cli.cluster_cmd import DASHBOARD
    from ember.cluster.rollout import run_rollout as rollout
    from ember.models.promotion import Registry

    state = rollout(args.address or DASHBOARD, Registry(args.tracking_uri), args.name, args.to,
                    args.app, _plan(args), args.database_url or default_url())
    rolled_back = bool(state.history) and state.history[-1]["event"] == "rollback"
    return 1 if rolled_back else 0


def run_rollback(args) -> int:
    from ember.cluster.rollout import rollback
    from ember.errors import EmberError
    from ember.models import rollouts
    from ember.models.promotion import Registry

    state = rollouts.load(args.name)
    if state is None:
        raise EmberError(f"'{args.name}' is not rolled out (`ember models rollouts`)")
    rollback(state, Registry(args.tracking_uri), args.reason)
    return 0


def run_rollouts(args) -> int:
    from ember.models.rollouts import list_rollouts

    found = list_rollouts()
    if not found:
        print("no served name has versions (`ember models rollout NAME --to VERSION`)")
        return 0
    for rollout in found:
        source = f"  [{rollout.registered}]" if rollout.registered else ""
        print(rollout.describe() + source)
        if rollout.previous is not None:
            print(f"  previous: {rollout.previous.adapter} (ember models rollback "
                  f"{rollout.name})")
    return 0
