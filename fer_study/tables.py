"""The paper's tables and figures, declared once.

A :class:`TableSpec` holds everything about one table: its cells (each a set of config overrides
in the paper's vocabulary, with the paper's number), how they are laid out, which cell each is
compared against, and the notebook that renders it. The grid runner, the report, the CLI's
choices, the notebooks' parameters and the nbval list are all derived from :data:`TABLES` and
:data:`FIGURES`; adding a table is one spec here and one notebook.

Cells shared between tables (Table 2 (d) is Table 1's Swin-S proposed cell) have the same config
and therefore the same run id: they are trained once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fer_study.config import TrainConfig, make_config

#: The demo profile's CPU-sized stand-in of each paper backbone (same family, random init).
DEMO_BACKBONE = {"vit_s": "tiny_vit", "deit_s": "tiny_deit", "convit_s": "tiny_convit", "xcit_s": "tiny_xcit",
                 "swin_t": "tiny_swin_t", "swin_s": "tiny_swin_s", "swin_b": "tiny_swin_b", "swin_l": "tiny_swin_l"}
#: The ``ferplus-cpu`` profile's stand-ins (real FERPlus, random init, wide conv stem; Table 2 only).
FERPLUS_CPU_BACKBONE = {"swin_s": "cpu_swin_s", "swin_b": "cpu_swin_b"}
#: Per profile: paper backbone alias -> the backbone that profile trains (identity when absent).
PROFILE_BACKBONES: dict[str, dict[str, str]] = {"demo": DEMO_BACKBONE, "ferplus-cpu": FERPLUS_CPU_BACKBONE}
#: Per profile: the tables it runs and reports when none is named (absent: all of them). ``ferplus-cpu``
#: is sized for Table 2 on the 2-core CPU (3 hours for 5 settings x 3 seeds); Table 3 would double it.
PROFILE_TABLES: dict[str, tuple[str, ...]] = {"ferplus-cpu": ("table2",)}

VANILLA = {"model.up": "bilinear", "model.down": "none", "model.stn": False}
PROPOSED = {"model.up": "sr", "model.down": "ltr", "model.stn": False}
PROPOSED_STN = {"model.up": "sr", "model.down": "ltr", "model.stn": True}


@dataclass(frozen=True)
class Cell:
    """One run-backed cell of a table (one run per seed)."""

    key: str  # unique within the table: "d", "Swin-S|F-PDLS + Proposed", ...
    overrides: dict[str, Any]
    paper: float | None  # the paper's number for this cell (accuracy %)
    labels: dict[str, Any] = field(default_factory=dict)  # the row's label columns
    column: str | None = None  # pairs layout: the column this cell sits in
    baseline: str | None = None  # key of the cell it is compared against (None: none)
    datasets: tuple[str, ...] | None = None  # only runs on these data sets (None: any)


@dataclass(frozen=True)
class TableSpec:
    name: str  # "table2"
    title: str
    notebook: str  # the notebook (without .ipynb) that renders it
    layout: str  # "pairs" (two columns per row), "rows" (one cell per row), "sota" (cited rows + ours)
    cells: tuple[Cell, ...]
    cited: tuple[tuple[str, str, float | None, float | None], ...] = ()  # sota: (type, method, FERPlus, RAF-DB)
    notes: tuple[str, ...] = ()  # printed under the table

    def cell(self, key: str) -> Cell:
        for c in self.cells:
            if c.key == key:
                return c
        raise KeyError(f"{self.name} has no cell {key!r}; cells: {[c.key for c in self.cells]}")

    @property
    def varies(self) -> set[str]:
        """Config keys whose value differs between this table's cells."""
        keys = {k for c in self.cells for k in c.overrides}
        return {k for k in keys if len({repr(c.overrides.get(k)) for c in self.cells}) > 1}


def _table1() -> TableSpec:
    paper = {"vit_s": (88.84, 88.87), "deit_s": (88.00, 88.09), "convit_s": (88.12, 88.53),
             "xcit_s": (88.22, 88.81), "swin_s": (88.69, 89.28)}
    names = {"vit_s": "ViT", "deit_s": "DeiT", "convit_s": "ConViT", "xcit_s": "XCiT", "swin_s": "Swin-S"}
    cells = []
    for b, (van, prop) in paper.items():
        base = f"{names[b]}|CE + Vanilla"
        cells.append(Cell(base, {"model.backbone": b, "loss": "ce", **VANILLA}, van, {"Models": names[b]},
                          "CE + Vanilla"))
        cells.append(Cell(f"{names[b]}|F-PDLS + Proposed", {"model.backbone": b, "loss": "fpdls", **PROPOSED}, prop,
                          {"Models": names[b]}, "F-PDLS + Proposed", baseline=base))
    return TableSpec("table1", "Table 1: transformer backbones, vanilla vs. proposed", "02_table1_backbones",
                     "pairs", tuple(cells))


def _table2() -> TableSpec:
    s = [("a", "swin_s", "bilinear", "none", False, 88.69), ("b", "swin_s", "bilinear", "ltr", False, 88.53),
         ("c", "swin_s", "sr", "bilinear", False, 89.03), ("d", "swin_s", "sr", "ltr", False, 89.28),
         ("e", "swin_b", "sr", "ltr", True, 89.50)]
    up_l = {"bilinear": "Bi.", "sr": "SR"}
    down_l = {"none": "-", "ltr": "LTR", "bilinear": "Bi."}
    cells = tuple(
        Cell(k, {"model.backbone": b, "loss": "fpdls", "model.up": up, "model.down": dn, "model.stn": stn}, p,
             {"Setting": k, "model": {"swin_s": "Swin-S", "swin_b": "Swin-B"}[b], "STN": "✓" if stn else "-",
              "Up.": up_l[up], "Down.": down_l[dn]}, baseline=None if k == "a" else "a")
        for k, b, up, dn, stn, p in s)
    # not in the paper: setting (d) fed the true high-resolution renders instead of super-resolved
    # 48 px images (SynthFER only): the accuracy a perfect f_sr would allow
    oracle = Cell("oracle", {"model.backbone": "swin_s", "loss": "fpdls", "model.up": "sr", "model.down": "ltr",
                             "model.stn": False, "sr_backend": "oracle"}, None,
                  {"Setting": "oracle", "model": "Swin-S", "STN": "-", "Up.": "true HR", "Down.": "LTR"},
                  baseline="a", datasets=("synthfer",))
    return TableSpec("table2", "Table 2: ablation of STN, up- and down-scaling", "03_table2_ablation", "rows",
                     cells + (oracle,), notes=(
                         "oracle (not in the paper, SynthFER only): setting (d) fed the true high-resolution "
                         "renders (before blur and noise, area-downscaled to the SR size) instead of f_sr's output: "
                         "what a perfect super-resolver would allow. Gap recovered = (setting - (a)) / (oracle - "
                         "(a)), over the seeds all three have; shown only where the oracle is more than 1 point "
                         "above (a) (\u2013 otherwise: the ratio of two small, noisy differences says nothing, and "
                         "resolution is then not what limits the setting).",))


def _table3() -> TableSpec:
    paper = {"ce": (88.72, 88.87), "pdls": (88.69, 88.91), "fpdls": (88.78, 89.50)}
    names = {"ce": "Cross-Entropy", "pdls": "PDLS", "fpdls": "F-PDLS (ours)"}
    cells = []
    for loss, (van, prop) in paper.items():
        base = f"{names[loss]}|Vanilla"
        cells.append(Cell(base, {"model.backbone": "swin_b", "loss": loss, **VANILLA}, van, {"Loss": names[loss]},
                          "Vanilla"))
        cells.append(Cell(f"{names[loss]}|Proposed", {"model.backbone": "swin_b", "loss": loss, **PROPOSED_STN}, prop,
                          {"Loss": names[loss]}, "Proposed", baseline=base))
    return TableSpec("table3", "Table 3: CE, PDLS and F-PDLS, vanilla vs. proposed", "04_table3_losses", "pairs",
                     tuple(cells), notes=(
                         "PDLS alpha: `pdls_alpha` if set, else `alpha` (0.8, the paper's value for F-PDLS; the "
                         "paper gives no separate PDLS value). The authors' code built PDLS with its class default "
                         "0.5: `fer-study run table3 --set pdls_alpha=0.5` reproduces that.",))


def _table4() -> TableSpec:
    cells = (
        Cell("ours|FERPlus", {"model.backbone": "swin_b", "loss": "fpdls", **PROPOSED_STN}, 89.50,
             {"dataset": "FERPlus"}),
        Cell("ours|RAF-DB", {"model.backbone": "swin_l", "loss": "fpdls", **PROPOSED_STN, "dataset": "rafdb",
                             "model.num_classes": 7, "prior": "psr"}, 88.57, {"dataset": "RAF-DB"}),
    )
    cited = (("CNN", "RAN [6]", 89.16, 86.90), ("CNN", "SCN [7]", 89.35, 88.14), ("CNN", "PSR [10]", 89.75, 88.98),
             ("Transformer", "LBP + CVT [15]", 88.81, 88.14), ("Transformer", "MVT [14]", 88.88, 87.03),
             ("Transformer", "VIT + SE [13]", None, 86.18))
    return TableSpec("table4", "Table 4: our best setting beside the cited state of the art", "05_table4_sota", "sota",
                     cells, cited)


#: Every table of the paper, in order.
TABLES: dict[str, TableSpec] = {t.name: t for t in (_table1(), _table2(), _table3(), _table4())}


@dataclass(frozen=True)
class FigureSpec:
    name: str
    title: str
    notebook: str
    source: tuple[str, str] | None  # (table, cell) whose run it draws; None: any finished run


#: Notebooks that draw from runs but are not tables.
FIGURES: dict[str, FigureSpec] = {
    "figure2": FigureSpec("figure2", "Figure 2: what the trained resizer changes", "06_figure2_resizer", ("table2", "d")),
    "explore": FigureSpec("explore", "Explore runs (JupyterLab)", "07_explore", None),
}
#: Notebooks before the report: the data overview and the one-run training notebook.
DATA_NOTEBOOK = "00_data"
TRAIN_NOTEBOOK = "01_train"


def table_names() -> list[str]:
    return list(TABLES)


def tables_for(name: str, profile: str | None = None) -> list[TableSpec]:
    """``all`` (every table, or the tables of ``profile``: :data:`PROFILE_TABLES`) or one table name."""
    if name == "all":
        keep = PROFILE_TABLES.get(profile or "", tuple(TABLES))
        return [t for t in TABLES.values() if t.name in keep]
    if name not in TABLES:
        from fer_study.errors import ConfigError

        raise ConfigError(f"unknown table {name!r}; choose from {', '.join(TABLES)} or all")
    return [TABLES[name]]


def report_notebooks(profile: str | None = None) -> list[str]:
    """The notebooks ``fer-study report`` executes, in order: the tables of ``profile``
    (:data:`PROFILE_TABLES`) and the figures drawn from them (the explorer only with every table)."""
    tables = tables_for("all", profile)
    figs = [f for f in FIGURES.values() if (f.source is None and len(tables) == len(TABLES))
            or (f.source is not None and f.source[0] in {t.name for t in tables})]
    return [t.notebook for t in tables] + [f.notebook for f in figs]


def nbval_notebooks() -> list[str]:
    """The notebooks checked by nbval in ``make test`` (those that run in seconds without runs)."""
    return [DATA_NOTEBOOK, TRAIN_NOTEBOOK] + [t.notebook for t in TABLES.values()]


def cell_applies(cell: Cell, profile: str, overrides: list[str] | None = None) -> bool:
    """Whether ``cell`` runs on the data set of ``profile`` with ``overrides`` (see ``Cell.datasets``)."""
    if cell.datasets is None:
        return True
    ds = [o.split("=", 1)[1].strip() for o in overrides or [] if o.split("=", 1)[0].strip() == "dataset"]
    return (ds[-1] if ds else make_config(profile).dataset) in cell.datasets


def cell_config(cell: Cell, profile: str, seed: int, overrides: list[str] | None = None) -> TrainConfig:
    """The run config of ``cell``: the profile, the cell's overrides (paper backbone aliases mapped to
    the profile's), the seed, then the user's overrides (``fer-study run --set``)."""
    ov = dict(cell.overrides)
    bmap = PROFILE_BACKBONES.get(profile, {})
    ov["model.backbone"] = bmap.get(ov["model.backbone"], ov["model.backbone"])
    ov["seed"] = seed
    return make_config(profile, ov, list(overrides or []))  # the backbone's recipe follows the user's --set too


if __name__ == "__main__":  # `python -m fer_study.tables --nbval`: the nbval list for the Makefile
    import sys

    if sys.argv[1:] == ["--nbval"]:
        print(" ".join(f"notebooks/{n}.ipynb" for n in nbval_notebooks()))
    else:
        print("usage: python -m fer_study.tables --nbval", file=sys.stderr)
        raise SystemExit(2)
