"""`ember monitor up|down|status|dashboard`: Prometheus for the cluster, Grafana's dashboard."""

from __future__ import annotations


def register(commands) -> None:
    monitor = commands.add_parser("monitor", help="Prometheus scraping the cluster; the "
                                  "Grafana dashboard")
    sub = monitor.add_subparsers(dest="monitor_command", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="start Prometheus on Ray's targets")
    up.add_argument("--port", type=int, default=9090)
    up.add_argument("--scrape-interval", type=float, default=5.0, help="seconds")
    up.add_argument("--binary", help="the prometheus executable (default: on PATH)")
    up.set_defaults(func=run_up)
    sub.add_parser("down", help="stop it").set_defaults(func=run_down)
    sub.add_parser("status", help="is it running").set_defaults(func=run_status)
    dash = sub.add_parser("dashboard", help="write the Grafana dashboard JSON")
    dash.add_argument("--output", default="-", help="file (default: stdout)")
    dash.set_defaults(func=run_dashboard)


def run_up(args) -> int:
    from ember.monitoring.prometheus import monitor_dir, ray_discovery_file, start

    url = start(args.port, args.scrape_interval, args.binary)
    print(f"Prometheus is up at {url} (config {monitor_dir() / 'prometheus.yml'}, targets "
          f"from {ray_discovery_file()})")
    print("Grafana: import `ember monitor dashboard --output ember.json` and pick this "
          "Prometheus as its data source")
    return 0


def run_down(args) -> int:
    from ember.monitoring.prometheus import stop

    print("Prometheus stopped" if stop() else "Prometheus was not running")
    return 0


def run_status(args) -> int:
    from ember.monitoring.prometheus import monitor_dir, read_pid

    pid = read_pid()
    print(f"Prometheus running, pid {pid} ({monitor_dir()})" if pid else "Prometheus is not "
          "running (`ember monitor up`)")
    return 0 if pid else 1


def run_dashboard(args) -> int:
    from importlib.resources import files

    text = files("ember.monitoring").joinpath("grafana-dashboard.json").read_text()
    if args.output == "-":
        print(text, end="")
    else:
        with open(args.output, "w") as f:
            f.write(text)
        print(f"wrote {args.output}: in Grafana, Dashboards > New > Import, upload it, pick "
              f"the Prometheus data source")
    return 0
