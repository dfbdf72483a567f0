"""Running the node and checking its configuration: serve, init, demo, config check/show."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dicomnode.cli.common import EXIT_OK, config_option, print_help

if TYPE_CHECKING:
    from dicomnode.config import Config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the node (works with no configuration at all)")
    config_option(serve)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N node processes sharing the DICOM port (needs PostgreSQL; docs/scaling.md)",
    )
    serve.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    trial = serve.add_argument_group(
        "quick trials", "override the configuration's value (one process; not with --workers)"
    )
    trial.add_argument("--port", type=int, default=None, help="the DICOM port (node.port)")
    trial.add_argument("--ae-title", default=None, help="our AE title (node.ae_title)")
    trial.add_argument(
        "--storage",
        type=Path,
        default=None,
        metavar="DIR",
        help="spool and SQLite index here (storage.path)",
    )
    serve.set_defaults(run=serve_command)

    init = sub.add_parser(
        "init",
        help="write a commented node.yaml and a rules/ folder with one working rule",
        description="Write DIR/node.yaml (every first setting, commented) and "
        "DIR/rules/ct-tissue.yaml (every CT through the reference pipeline, results to the "
        "destination pacs). Fill in the PACS's address, then: dicomnode serve --config "
        "DIR/node.yaml. Never overwrites.",
    )
    init.add_argument("dir", nargs="?", type=Path, default=Path(), help="where (default: here)")
    init.set_defaults(run=init_command)

    demo = sub.add_parser(
        "demo", help="the whole flow on one machine: phantoms in, SEG and SR back (no setup)"
    )
    demo.add_argument("--workdir", type=Path, default=None, help="keep everything here")
    demo.set_defaults(run=demo_command)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(title="config commands", metavar="COMMAND")
    check = config_sub.add_parser("check", help="validate the configuration; exit 2 on errors")
    config_option(check)
    check.set_defaults(run=config_check)
    show = config_sub.add_parser("show", help="print the effective configuration as YAML")
    config_option(show)
    show.set_defaults(run=config_show)
    config.set_defaults(run=lambda _a: print_help(config))


def serve_command(args: argparse.Namespace) -> int:
    from dicomnode.config import load_config
    from dicomnode.errors import ConfigError
    from dicomnode.logs import configure_logging
    from dicomnode.node import Node, check_config
    from dicomnode.workers import Supervisor, check_workers, worker_config

    config = with_overrides(load_config(args.config), args)
    configure_logging(config.logging.level, config.logging.format)
    if args.worker is not None:  # one of ``--workers N``, started by the supervisor
        Node(worker_config(config, args.worker)).run_until_signalled()
        return EXIT_OK
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: give 1 or more")
    if args.workers > 1:
        if any(v is not None for v in (args.port, args.ae_title, args.storage)):
            raise ConfigError(
                "--port, --ae-title and --storage are for a quick trial with one process; "
                "with --workers, set node.port, node.ae_title and storage.path in --config"
            )
        check_workers(config, args.workers)
        check_config(config, args.config or "built-in defaults")
        return Supervisor(args.config, args.workers).run()
    Node(config).run_until_signalled()
    return EXIT_OK


def with_overrides(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with ``serve``'s --port, --ae-title and --storage, validated as in YAML."""
    from pydantic import ValidationError

    from dicomnode.config import NodeConfig, StorageConfig
    from dicomnode.errors import ConfigError

    given = {"port": args.port, "ae_title": args.ae_title}
    node = {key: value for key, value in given.items() if value is not None}
    changes: dict[str, object] = {}
    try:
        if node:
            changes["node"] = NodeConfig.model_validate({**config.node.model_dump(), **node})
        if args.storage is not None:
            storage = {**config.storage.model_dump(), "path": args.storage.resolve()}
            changes["storage"] = StorageConfig.model_validate(storage)
    except ValidationError as exc:
        error = exc.errors()[0]
        option = "--" + str(error["loc"][0]).replace("_", "-") if error["loc"] else "serve"
        option = "--storage" if option == "--path" else option
        raise ConfigError(f"{option}: {error['msg']}") from None
    return config.model_copy(update=changes) if changes else config


def init_command(args: argparse.Namespace) -> int:
    from dicomnode.starter import write_starter

    written = write_starter(args.dir)
    for path in written:
        print(f"wrote {path}")
    config = written[0]
    print(
        f"next: fill in destinations.pacs in {config} (your PACS's AE title, host, port), then\n"
        f"  dicomnode config check --config {config}\n"
        f"  dicomnode serve --config {config}\n"
        "and send a CT series to DICOMNODE on port 11112: its SEG and SR go to the PACS."
    )
    return EXIT_OK


def demo_command(args: argparse.Namespace) -> int:
    from dicomnode.demo import run_demo
    from dicomnode.logs import configure_logging

    configure_logging("warning", "console")
    return run_demo(args.workdir)


def config_check(args: argparse.Namespace) -> int:
    from dicomnode.config import load_config
    from dicomnode.node import check_config
    from dicomnode.runners import ModelHost
    from dicomnode.store.lock import StorageLock

    config = load_config(args.config)
    source = args.config or "built-in defaults"
    # The very checks serve runs before it binds; then every model loads, not only
    # those the rules use, so that a broken one fails here and not on the first study.
    checked = check_config(config, str(source))
    with ModelHost(checked.models, config.base_dir) as host:
        host.load()
    print(f"{source}: {len(checked.pipelines)} pipelines and {len(checked.models)} models load")
    if config.rules_dir.exists():
        count = len(checked.rules)
        print(f"{config.rules_dir}: rules valid ({count} rule{'s' * (count != 1)})")
    if checked.admin_access is not None:
        admin = config.admin
        tokens = checked.admin_access.tokens
        access = f"token required: {tokens.describe()}" if tokens else "loopback, no token"
        scheme = "https" if admin.tls is not None else "http"
        print(f"admin API on {scheme}://{_url_host(admin.host)}:{admin.port}/ ({access})")
    lock = StorageLock(config.lock_folder)
    holder = lock.holder()
    if holder is None:
        print(f"storage {config.storage.path}: free")
    else:
        # Information, not an error: checking a running node's configuration is normal.
        print(f"note: {lock.in_use_message(holder)}; serve would refuse to start beside it")
    print(
        f"{source}: OK (AE {config.node.ae_title} on port {config.node.port}, "
        f"storage {config.storage.path}, {len(config.destinations)} destinations)"
    )
    return EXIT_OK


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def config_show(args: argparse.Namespace) -> int:
    import yaml

    from dicomnode.config import load_config

    config = load_config(args.config)
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    return EXIT_OK
