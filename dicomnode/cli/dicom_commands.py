"""Talking DICOM from the command line: echo and send."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dicomnode.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, config_option

if TYPE_CHECKING:
    from dicomnode.config import DestinationTLS, DicomwebDestination
    from dicomnode.dicom.scu import TlsSettings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    echo = sub.add_parser(
        "echo",
        help="C-ECHO a DICOM node: AE@HOST:PORT or a configured destination's name "
        "(a DICOMweb one: a QIDO-RS query)",
    )
    echo.add_argument("address", help="AE@HOST:PORT, or NAME from destinations")
    echo.add_argument("--calling-ae", default=None, help="our AE title (default node.ae_title)")
    echo.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    tls_options(echo, "(default for a destination: its tls settings)")
    config_option(echo)
    echo.set_defaults(run=echo_command)

    send = sub.add_parser("send", help="C-STORE files and folders (recursive) to AE@HOST:PORT")
    send.add_argument("paths", nargs="+", type=Path, help="files or folders")
    send.add_argument("--to", required=True, help="AE@HOST:PORT")
    send.add_argument("--calling-ae", default="DICOMNODE", help="our AE title (default DICOMNODE)")
    send.add_argument("--quiet", action="store_true", help="no progress bar, summary only")
    tls_options(send)
    send.set_defaults(run=send_command)


def tls_options(parser: argparse.ArgumentParser, default: str = "") -> None:
    """DICOM-TLS options: any of them turns TLS on; the peer's certificate is verified."""
    group = parser.add_argument_group(
        "DICOM-TLS (PS3.15 Annex B)",
        f"Any of these turns TLS on; the peer's certificate chain and name are always "
        f"verified {default}".strip(),
    )
    group.add_argument("--tls", action="store_true", help="use TLS (trusting the system's CAs)")
    group.add_argument(
        "--tls-ca", type=Path, metavar="PEM", help="trust these issuers (not the system's)"
    )
    group.add_argument("--tls-cert", type=Path, metavar="PEM", help="our client certificate")
    group.add_argument("--tls-key", type=Path, metavar="PEM", help="its private key")
    group.add_argument(
        "--tls-server-name", metavar="NAME", help="the name its certificate must carry (HOST)"
    )


def tls_settings(
    args: argparse.Namespace, configured: DestinationTLS | None = None, source: str = ""
) -> TlsSettings | None:
    """TLS from the command line, else ``configured`` (a destination's); None: plain TCP."""
    from pydantic import ValidationError

    from dicomnode.config import DestinationTLS
    from dicomnode.dicom import tls
    from dicomnode.dicom.scu import TlsSettings
    from dicomnode.errors import ConfigError

    where = f"{source}: " if configured is not None else ""
    given = (args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    if args.tls or any(value is not None for value in given):
        try:
            configured = DestinationTLS(
                ca_certificates=args.tls_ca,
                certificate=args.tls_cert,
                private_key=args.tls_key,
                server_name=args.tls_server_name,
            )
        except ValidationError as exc:
            raise ConfigError("--tls-cert and --tls-key go together") from exc
        source = f"--tls-ca {args.tls_ca}" if args.tls_ca else "the system's trusted CAs"
        where = ""  # the message names the file given
    if configured is None:
        return None
    try:
        context = tls.client_context(configured)
    except tls.TLSConfigError as exc:
        raise ConfigError(f"{where}{exc}") from exc
    return TlsSettings(lambda: context, configured.server_name, source)


def echo_command(args: argparse.Namespace) -> int:
    from dicomnode.config import DicomwebDestination, load_config
    from dicomnode.dicom.address import DicomAddress, parse_address
    from dicomnode.dicom.scu import ScuSettings, echo
    from dicomnode.dicom.status import describe, is_success
    from dicomnode.errors import AddressError

    config = load_config(args.config)
    calling_ae = args.calling_ae or config.node.ae_title
    configured, source = None, ""
    if "@" in args.address:
        address = parse_address(args.address)
    elif isinstance(destination := config.destinations.get(args.address), DicomwebDestination):
        return _qido_echo(args.address, destination, args.timeout)
    elif destination is not None:
        address = DicomAddress(destination.ae_title, destination.host, destination.port)
        calling_ae = args.calling_ae or destination.calling_ae or calling_ae
        configured, source = destination.tls, f"destinations.{args.address}.tls"
    else:
        known = ", ".join(sorted(config.destinations)) or "none configured"
        raise AddressError(
            f"{args.address!r} is neither AE@HOST:PORT nor a destination (known: {known})"
        )
    settings = ScuSettings(
        calling_ae=calling_ae,
        connect_timeout_seconds=args.timeout,
        network_timeout_seconds=args.timeout,
        tls=tls_settings(args, configured, source),
    )
    result = echo(address, settings)
    verdict = "OK" if is_success(result.status) else describe(result.status)
    print(f"{address}: C-ECHO {verdict} (0x{result.status:04X}) in {result.seconds * 1000:.0f} ms")
    return EXIT_OK if is_success(result.status) else EXIT_FAILED


def _qido_echo(name: str, destination: DicomwebDestination, timeout: float) -> int:
    """A DICOMweb destination answers a QIDO-RS query (``GET {url}/studies?limit=1``);
    PeerError (the CLI prints the reason, exit 1) when it cannot be reached or refuses us."""
    from dataclasses import replace

    from dicomnode.dicom.dicomweb import qido_echo, web_settings

    settings = replace(web_settings(name, destination), timeout_seconds=timeout)
    seconds = qido_echo(settings)
    print(f"{destination.url}: QIDO-RS OK in {seconds * 1000:.0f} ms")
    return EXIT_OK


def send_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from dicomnode.dicom.address import parse_address
    from dicomnode.dicom.scu import (
        FileResult,
        ScuSettings,
        SendableFile,
        SkippedFile,
        find_files,
        inspect_file,
        send_files,
    )

    address = parse_address(args.to)
    settings = ScuSettings(calling_ae=args.calling_ae, tls=tls_settings(args))
    console = Console(stderr=True, soft_wrap=True)  # a path stays one line, to copy
    missing = [str(path) for path in args.paths if not path.exists()]
    if missing:
        print(f"dicomnode: {', '.join(missing)}: no such file or folder", file=sys.stderr)
        return EXIT_USAGE
    sendable: list[SendableFile] = []
    skipped: list[SkippedFile] = []
    for path in find_files(args.paths):
        found = inspect_file(path)
        (sendable if isinstance(found, SendableFile) else skipped).append(found)  # type: ignore[arg-type]
    for item in skipped:
        console.print(f"[yellow]skipped[/] {item.path}: {item.reason}")
    if not sendable:
        console.print("nothing to send")
        return EXIT_FAILED
    total = sum(item.size for item in sendable)
    columns = (
        BarColumn(),
        MofNCompleteColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=args.quiet) as progress:
        task = progress.add_task("send", total=total)
        files = progress.add_task("files", total=len(sendable), visible=False)

        def advance(_result: FileResult, sent: int) -> None:
            progress.advance(task, sent)
            progress.advance(files, 1)

        results = send_files(sendable, address, settings, advance)
    failed = [r for r in results if not r.ok]
    for result in failed:
        console.print(f"[red]failed[/] {result.path}: {result.note}")
    ok = len(results) - len(failed)
    print(f"{address}: {ok} of {len(results)} sent, {len(failed)} failed, {len(skipped)} skipped")
    return EXIT_OK if not failed else EXIT_FAILED
