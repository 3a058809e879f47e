# Figures: each notebook in notebooks/ is executed by papermill (kernel `irrepro`) with a
# `parameters` cell; the figures go to results/<profile>/figures/ (PNG + PDF), the executed
# notebooks to results/<profile>/notebooks/. One rule per figure (figure_<name>, as the
# DVC stages), made in a loop so that each lists exactly its own inputs.

FIGURE_CATEGORY = {
    name: "Study 2: SynTOD" if name.startswith("syntod") else "Study 1: LoRA rerankers" for name in FIGURE_INPUTS
}

for _name, _inputs in FIGURE_INPUTS.items():

    rule:
        name:
            f"figure_{_name}"
        input:
            stage_code("figure", *FIGURE_CODE[_name], "stages/_shared.py"),
            **_inputs,
            notebook=f"notebooks/{_name}.ipynb",
        output:
            # the PNG of each figure goes into the HTML report (`make report`), with its caption
            figures=[
                (
                    plot(
                        report(
                            f,
                            caption=f"../report/{_name}.rst",
                            category=FIGURE_CATEGORY[_name],
                            labels={"figure": _name},
                        )
                    )
                    if f.endswith(".png")
                    else f
                )
                for f in (target(f"{FIGURES_DIR}/{_name}.{fmt}") for fmt in P["figures"]["formats"])
            ],
            notebook=f"{NOTEBOOKS_OUT}/{_name}.ipynb",
        log:
            f"{LOGS}/figures/{_name}.log",
        conda:
            ENV
        resources:
            **resources_of("figure"),
        params:
            profile=PROFILE,
            name=_name,
            knobs=keys("figures"),
            inputs=" ".join(f"--input {k}={v}" for k, v in _inputs.items()),
            out_dir=lambda w, output: os.path.dirname(output.figures[0]),
        shell:
            "irrepro figure --profile {params.profile} --name {params.name} --notebook {input.notebook}"
            " {params.inputs} --out-dir {params.out_dir} --out-notebook {output.notebook} --log {log}"
