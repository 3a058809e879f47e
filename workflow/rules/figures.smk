# Figures: each notebook in notebooks/ is executed by papermill (kernel `irrepro`) with a
# `parameters` cell; the figures go to results/<profile>/figures/ (PNG + PDF), the executed
# notebooks to results/<profile>/notebooks/. One rule per figure (figure_<name>, as the
# DVC stages), made in a loop so that each lists exactly its own inputs.

for _name, _inputs in FIGURE_INPUTS.items():

    rule:
        name:
            f"figure_{_name}"
        input:
            code(*FIGURE_CODE[_name]),
            **_inputs,
            notebook=f"notebooks/{_name}.ipynb",
        output:
            figures=[f"{FIGURES_DIR}/{_name}.{fmt}" for fmt in P["figures"]["formats"]],
            notebook=f"{NOTEBOOKS_OUT}/{_name}.ipynb",
        params:
            profile=PROFILE,
            name=_name,
            figures=P["figures"],
            inputs=" ".join(f"--input {k}={v}" for k, v in _inputs.items()),
            out_dir=lambda w, output: os.path.dirname(output.figures[0]),
        log:
            f"{LOGS}/figures/{_name}.log",
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            ENV
        shell:
            "irrepro figure --profile {params.profile} --name {params.name} --notebook {input.notebook}"
            " {params.inputs} --out-dir {params.out_dir} --out-notebook {output.notebook} --log {log}"
