"""Running the node and checking its configuration: serve, demo, config check/show."""

from __future__ import annotations

import argparse
from pathlib import Path

from dicomnode.cli.common import EXIT_OK, config_option, print_help
from dicomnode.cli.rules_commands import load_rules


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the node (works with no configuration at all)")
    config_option(serve)
    serve.set_defaults(run=serve_command)

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
    from dicomnode.logs import configure_logging
    from dicomnode.node import Node

    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format)
    Node(config).run_until_signalled()
    return EXIT_OK


def demo_command(args: argparse.Namespace) -> int:
    from dicomnode.demo import run_demo
    from dicomnode.logs import configure_logging

    configure_logging("warning", "console")
    return run_demo(args.workdir)


def config_check(args: argparse.Namespace) -> int:
    from dicomnode.config import load_config
    from dicomnode.pipeline.definition import all_definitions
    from dicomnode.runners import ModelHost

    config = load_config(args.config)
    source = args.config or "built-in defaults"
    models, pipelines = all_definitions(config.models, config.pipelines, str(source))
    # A model that cannot load fails here, not on the first study.
    with ModelHost(models, config.base_dir) as host:
        host.load()
    print(f"{source}: {len(pipelines)} pipelines and {len(models)} models load")
    if config.rules_dir.is_dir():
        load_rules(args, None)
        print(f"{config.rules_dir}: rules valid")
    print(
        f"{source}: OK (AE {config.node.ae_title} on port {config.node.port}, "
        f"storage {config.storage.path}, {len(config.destinations)} destinations)"
    )
    return EXIT_OK


def config_show(args: argparse.Namespace) -> int:
    import yaml

    from dicomnode.config import load_config

    config = load_config(args.config)
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    return EXIT_OK
