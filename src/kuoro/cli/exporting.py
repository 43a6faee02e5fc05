"""``kuoro export``: a trained fusion project's model for other runtimes."""

from __future__ import annotations

from pathlib import Path

import click

from kuoro.cli.context import Context, pass_context
from kuoro.fusion.onnx_export import INPUT_LAYOUT, OPSET
from kuoro.util.wording import plural

HELP = f"""Write the trained fusion model of PROJECT_ID, members included, as ONNX.

The graph (opset {OPSET}) computes the fused score of each candidate from Kuoro's candidate
features, as `kuoro suggest` does:

\b
{INPUT_LAYOUT}

The metadata also names the project, its sources in column order (metadata sources) and
the top_k the features were computed with.
"""


@click.command("export", help=HELP)
@click.argument("project_id")
@click.option(
    "--onnx", "onnx_path", required=True, metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the model as ONNX to FILE (needs pip install 'kuoro[onnx]').",
)  # fmt: skip
@pass_context
def export_command(obj: Context, project_id: str, onnx_path: Path) -> None:
    from kuoro.project.fusion_export import export_onnx  # onnx: loaded only to export

    project = obj.open_project(project_id)
    done = export_onnx(project, onnx_path)
    click.echo(
        f"exported '{project_id}' ({done.family}, {plural(done.members, 'member')}, sources "
        f"{', '.join(done.sources)}) to {done.path} ({done.bytes:,} bytes)"
    )
