"""Stage ``figure`` (the ``figure_<name>`` rules): execute one figure notebook with papermill."""

from __future__ import annotations

from ..commands import In, Opt, Out
from ..errors import InputError
from ._shared import key_path

HELP = "execute one figure notebook with papermill (kernel irrepro)"
ARGS = (
    Opt("--name", "figure name: the output files are <out-dir>/<name>.<format>", required=True),
    In("--notebook", "notebooks/<name>.ipynb"),
    Opt("--input", "an input of the notebook (repeatable), e.g. checkpoints=results/mini/rerank_checkpoints.tsv",
        required=True, action="append", type=key_path, metavar="KEY=PATH"),
    # shared by every figure job (which writes only its <name>.<format> files there): not locked
    Opt("--out-dir", "figure directory, e.g. results/<profile>/figures", required=True),
    Out("--out-notebook", "executed notebook, written only on success"),
    Opt("--kernel", "Jupyter kernel name (default: %(default)s)", default="irrepro"),
)
PARAMS = ("profile", "figures")


def run(a, P) -> int:
    from ..figures import run_notebook

    inputs = dict(a.input)
    if len(inputs) != len(a.input):
        raise InputError(f"duplicate keys in {[k for k, _ in a.input]}", key="--input")
    # Only params.yaml's figures section, the profile and the paths: never environment values.
    parameters = dict(P["figures"], profile=P["profile"], inputs=inputs, out_dir=a.out_dir, name=a.name)
    run_notebook(a.notebook, a.out_notebook, parameters, kernel_name=a.kernel)
    return 0
