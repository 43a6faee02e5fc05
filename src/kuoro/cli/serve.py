"""``kuoro serve``: the Annif-compatible REST API on a local port."""

from __future__ import annotations

import click

from kuoro.cli.context import Context, pass_context


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=5000, show_default=True,
    help="Port to listen on.",
)  # fmt: skip
@click.option("--lazy", is_flag=True, help="Load each model on its first request, not at start.")
@click.option(
    "--learn-token", envvar="KUORO_LEARN_TOKEN", default=None, metavar="TOKEN",
    help="Enable POST .../learn for projects with allow_learn, for requests that send "
    "'Authorization: Bearer TOKEN'. Set it in the environment variable KUORO_LEARN_TOKEN "
    "rather than here: a token on the command line is shown to every user of the machine "
    "(ps). Use HTTPS in front of the server when it is reachable from other machines.",
)  # fmt: skip
@click.option(
    "--max-request-bytes", type=click.IntRange(min=1), default=1_000_000, show_default=True,
    help="Largest request body accepted; larger ones get 413.",
)  # fmt: skip
@click.option(
    "--access-log/--no-access-log", default=True, show_default=True,
    help="Log a line for every request (on standard output; other messages go to standard "
    "error).",
)  # fmt: skip
@pass_context
def serve_command(
    obj: Context,
    host: str,
    port: int,
    lazy: bool,
    learn_token: str | None,
    max_request_bytes: int,
    access_log: bool,
) -> None:
    """Serve the configured projects over Annif's REST API (base path /v1) until interrupted.

    Private projects are not served; hidden ones are served but not listed. GET /health tells
    which projects are ready; the OpenAPI spec is at /openapi.json.
    """
    # uvicorn, and FastAPI with pydantic through the server: heavy, loaded only to serve.
    import uvicorn

    from kuoro.server.app import create_app

    app = create_app(
        obj.datadir,
        obj.projects(),
        lazy=lazy,
        learn_token=learn_token,
        max_request_bytes=max_request_bytes,
    )
    level = {-1: "error", 0: "info"}.get(min(obj.verbosity, 1), "debug")
    # Requests are logged as other servers log them; -q (errors only) leaves them out too.
    uvicorn.run(app, host=host, port=port, log_level=level, access_log=access_log)
