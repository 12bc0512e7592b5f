"""The runs a config asks for, and the settings of each: the pipeline's table of contents.

A run is (recipe, fold, seed), trained, validated and scored in `results/runs/RECIPE/FOLD/seedSEED`:
- recipe: a grid combination (named by its values, `patch_size~8_heads~1_dropout~0.1`), `final`
  (the combination the protocol chose on validation data, trained deeper and longer by
  final.overrides) or an ablation variant (final with the variant's changes);
- fold: `all` (every image outside the locked test split; scored on the locked test) or `fold0`,
  `fold1`, ... (the other folds; scored on the held-out fold, the locked test and external sets);
- seed: the training seed.
Every run picks its epoch and out-of-distribution threshold on its own inner validation split
(vitct.data.partition). The grid is trained where the recipe is chosen: in every
cross-validation fold when `sweep.nested` (each fold's final runs take the combination its own
inner validation split chose; the shipped model, the best mean over the folds), else once on
`all`, whose inner validation images the folds later score as held-out (the report says so).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields

from vitct.data.partition import ALL, LEAVE_OUT, fold_names
from vitct.model.settings import ViTConfig
from vitct.training.settings import PRETRAINING_KEYS, TrainConfig

FINAL = "final"
ADAPT = "adapt~"  # an adaptation run's recipe: adapt~METHOD~nN
DATASET = "dataset"  # the data folder of the training source under results/data/
# Entries of dataset.sources and evaluation.external that name the demo generator's scanners or
# a Kaggle dataset instead of a folder.
DEMO_EXTERNAL = "demo:"
KAGGLE = "kaggle:"
# The preprocess section's keys are model settings too: the final model (or an ablation variant)
# may see larger, masked or standardised images unlike the sweep's, which follows the section.
PREPROCESS_KEYS = ("image_size", "mask", "intensity")
MODEL_KEYS = ({f.name for f in fields(ViTConfig)} | set(PREPROCESS_KEYS)) - {
    "in_channels",
    "num_classes",
}
TRAINING_KEYS = {f.name for f in fields(TrainConfig)}


@dataclass(frozen=True)
class Run:
    recipe: str
    fold: str
    seed: int

    def folder(self, results: str = "results") -> str:
        return f"{results}/runs/{self.recipe}/{self.fold}/seed{self.seed}"


def run_settings(config: dict, changes: dict) -> tuple[dict, dict]:
    """(model, training) settings of one run: the config's sections with `changes` applied."""
    preprocess = {k: v for k, v in config["preprocess"].items() if k in PREPROCESS_KEYS}
    model = {**config["model"], **preprocess}
    training = dict(config["training"])
    for key, value in changes.items():
        (model if key in MODEL_KEYS else training)[key] = value
    return model, training


def step_settings(params: dict, choice: list) -> tuple[ViTConfig, TrainConfig, dict, dict | None]:
    """The model, training and preprocessing settings of a run as its step builds them, and the
    choice it builds on: the sections the workflow hands it (`params["sections"]`), for a tuned
    recipe the grid values chosen on its choice runs' inner-validation metrics (`choice`, their
    train_metrics.json files), then the run's own changes (`params["changes"]`, its seed
    included)."""
    chosen = None
    if params["tuned"]:
        from vitct.evaluation.selection import choose_recipe  # pandas: not at start-up

        chosen = choose_recipe(choice, params["grid"], params["metric"])
    changes = {**(chosen["params"] if chosen else {}), **params["changes"]}
    model, training = run_settings(params["sections"], changes)
    preprocessing = {key: model[key] for key in PREPROCESS_KEYS}
    return ViTConfig.from_dict(model), TrainConfig.from_dict(training), preprocessing, chosen


def pretraining_settings(config: dict, changes: dict) -> dict:
    """The config's sections and a run's changes reduced to what shapes its masked-image
    pretraining, so that a pretraining job's parameters, and with them Snakemake's rerun
    decision, ignore every other setting."""
    keep = MODEL_KEYS | set(PRETRAINING_KEYS)
    sections = {
        "model": config["model"],
        "preprocess": {k: v for k, v in config["preprocess"].items() if k in PREPROCESS_KEYS},
        "training": {k: v for k, v in config["training"].items() if k in keep},
    }
    return {"sections": sections, "changes": {k: v for k, v in changes.items() if k in keep}}


def shares_final_pretraining(variant: dict) -> bool:
    """Whether an ablation variant's changes leave the final recipe's pretraining as it is (it
    changes neither the model nor a setting of PRETRAINING_KEYS), so it can reuse it."""
    return not set(variant) & (MODEL_KEYS | set(PRETRAINING_KEYS))


def combination_name(values: dict) -> str:
    """A grid combination's recipe name, its settings in grid order: `patch_size~8_heads~1`."""
    return "_".join(f"{key}~{value}" for key, value in values.items())


def dataset_spec(config: dict, name: str) -> dict:
    """How to fetch a data set: the `dataset` section for the training source (name DATASET);
    for a further training source (dataset.sources) or an external set (evaluation.external),
    its entry read as a folder or zip, `kaggle:OWNER/SLUG` (a download) or `demo:SCANNER` (the
    demo generator's other scanner, with other slices than the demo's and than each other's),
    expecting no particular counts."""
    if name == DATASET:  # less what names the training sources: adding one refetches nothing
        return {k: v for k, v in config["dataset"].items() if k not in ("name", "sources")}
    if name in config["dataset"]["sources"]:
        entry, setting, offset = config["dataset"]["sources"][name], "dataset.sources", 2
    else:
        entry, setting, offset = config["evaluation"]["external"][name], "evaluation.external", 1
    spec = {
        "source": "local",
        "path": entry,
        "max_extract_mb": config["dataset"]["max_extract_mb"],
        "expected_counts": None,
        "setting": f"{setting}.{name}",
    }
    if entry.startswith(DEMO_EXTERNAL):
        demo = config["dataset"]["demo"]
        scanner = entry.removeprefix(DEMO_EXTERNAL)
        # scanner b stands for another source's PNG export: never DICOM
        fmt = demo["format"] if scanner == "a" else "png"
        seed = demo["seed"] + offset
        spec.update(source="demo", demo={**demo, "seed": seed, "scanner": scanner, "format": fmt})
    elif entry.startswith(KAGGLE):
        spec.update(source="kaggle", path="", kaggle_dataset=entry.removeprefix(KAGGLE))
    return spec


def training_sources(config: dict) -> dict[str, str]:
    """Each labelled training source's name (its `source` in the tables) -> the data set it is
    read from: the `dataset` section's (named dataset.name), every dataset.sources entry, and
    the adaptation site's pool when adaptation.train_on_pool."""
    sources = {config["dataset"]["name"]: DATASET}
    sources.update({name: name for name in config["dataset"]["sources"]})
    adaptation = config["adaptation"]
    if adaptation["site"] and adaptation["train_on_pool"]:
        sources[adaptation["site"]] = adaptation["site"]
    return sources


class Plan:
    """Every run of one config, and what each needs."""

    def __init__(self, config: dict):
        self.config = config
        grid = config["sweep"]["grid"]
        combos = (dict(zip(grid, c, strict=True)) for c in itertools.product(*grid.values()))
        self.grid = {combination_name(c): c for c in combos}
        self.variants = config["ablation"]["variants"]
        self.cv_folds = fold_names(config["evaluation"]["folds"])
        self.seeds = list(config["evaluation"]["seeds"])
        self.seed = config["training"]["seed"]
        self.external = dict(config["evaluation"]["external"])
        self.sources = training_sources(config)
        # Leave one source out (each scored on the one left out), with two sources or more.
        self.lo_folds = [LEAVE_OUT + name for name in self.sources] if len(self.sources) > 1 else []
        self.adaptation = config["adaptation"]
        self.site = self.adaptation["site"] or None

    @property
    def nested(self) -> bool:
        """Whether every cross-validation fold chooses its own recipe from the grid."""
        return bool(self.config["sweep"]["nested"] and self.cv_folds)

    # --- the runs -----------------------------------------------------------------------------

    def sweep_runs(self) -> list[Run]:
        folds = [*self.cv_folds, *self.lo_folds] if self.nested else [ALL]
        return [Run(name, fold, self.seed) for fold in folds for name in self.grid]

    def choice_runs(self, fold: str) -> list[Run]:
        """The grid runs whose inner-validation metrics choose the recipe of a run on `fold`:
        that fold's own (nested), all cross-validation folds' for the shipped model (nested),
        else `all`'s."""
        if not self.nested:
            folds = [ALL]
        else:
            folds = self.cv_folds if fold == ALL else [fold]
        return [Run(name, f, self.seed) for f in folds for name in self.grid]

    def shipped(self) -> Run:
        """The model users get: the final recipe on every non-test image."""
        return Run(FINAL, ALL, self.seed)

    def cv_runs(self, recipe: str = FINAL) -> list[Run]:
        return [Run(recipe, fold, seed) for fold in self.cv_folds for seed in self.seeds]

    def lo_runs(self) -> list[Run]:
        """The final recipe trained without one source, scored on it (two sources or more)."""
        return [Run(FINAL, fold, seed) for fold in self.lo_folds for seed in self.seeds]

    def final_runs(self) -> list[Run]:
        return [self.shipped(), *self.cv_runs(), *self.lo_runs()]

    def variant_runs(self) -> list[Run]:
        """Each variant over the folds and seeds (ablation.cross_validate, with folds), else
        once on `all`, with its own seed when it sets one."""
        if self.config["ablation"]["cross_validate"] and self.cv_folds:
            return [run for name in self.variants for run in self.cv_runs(name)]
        return [Run(name, ALL, v.get("seed", self.seed)) for name, v in self.variants.items()]

    def adaptation_runs(self) -> list[Run]:
        """The shipped model adapted to the site with n of its labelled slices, per draw
        (adaptation.labels; n 0 is the shipped model itself, "all" the whole pool, drawn once).
        """
        if not self.site:
            return []
        method, runs = self.adaptation["method"], []
        for n in self.adaptation["labels"]:
            draws = 1 if n == "all" else self.adaptation["draws"]
            if n != 0:
                runs += [Run(f"{ADAPT}{method}~n{n}", f"draw{d}", self.seed) for d in range(draws)]
        return runs

    def scored_runs(self) -> list[Run]:
        return [*self.final_runs(), *self.variant_runs(), *self.adaptation_runs()]

    def runs(self) -> list[Run]:
        return [*self.sweep_runs(), *self.scored_runs()]

    def run_folds(self) -> list[str]:
        """Every fold a run trains on (an adaptation's draws start from `all`'s model)."""
        return [ALL, *self.cv_folds, *self.lo_folds]

    # --- what a run needs ---------------------------------------------------------------------

    def tuned(self, recipe: str) -> bool:
        """Whether the recipe builds on the chosen grid combination (final, the variants and
        the adaptations of the shipped model)."""
        return recipe not in self.grid

    def changes(self, recipe: str) -> dict:
        """What the recipe changes in the config's model, training and preprocess sections, on
        top of the chosen grid combination for a tuned recipe."""
        if recipe in self.grid:
            return dict(self.grid[recipe])
        overrides = self.config["final"]["overrides"]
        if recipe == FINAL:
            return dict(overrides)
        if recipe in self.variants:
            return {**overrides, **self.variants[recipe]}
        if recipe.startswith(ADAPT):
            return dict(overrides)  # the shipped model's recipe, then adapted
        raise ValueError(
            f"no recipe '{recipe}': a run's recipe is {FINAL}, an ablation variant "
            f"({', '.join(self.variants) or 'none configured'}) or a grid combination"
        )

    def run_changes(self, run: Run, chosen: dict | None = None) -> dict:
        """Everything a run changes in the config's sections: the chosen grid values (for a
        tuned recipe), the recipe's own changes and the run's seed."""
        return {**(chosen or {}), **self.changes(run.recipe), "seed": run.seed}

    def settings(self, run: Run, chosen: dict | None = None) -> tuple[dict, dict]:
        """(model, training) settings of a run; without `chosen`, a tuned recipe's swept keys
        keep the config's values (the start-up estimate, before the choice is made)."""
        return run_settings(self.config, self.run_changes(run, chosen))

    def preprocessing(self, recipe: str) -> dict:
        """The image cache a recipe reads: its size, mask and intensity (never swept, so known
        before the sweep's choice)."""
        model = run_settings(self.config, self.changes(recipe))[0]
        return {"size": model["image_size"], "mask": model["mask"], "intensity": model["intensity"]}

    def pretraining_owner(self, run: Run) -> Run | None:
        """The run whose shared masked-image pretraining this run starts from (itself, or the
        final recipe's run on the same fold and seed when a variant leaves it as it is); None
        when it does not pretrain, or pretrains inside its own training job: a grid run, and
        any run while the grid sweeps pretraining (only the choice says whether it pretrains).
        """
        if run.recipe.startswith(ADAPT):
            return None  # it starts from the shipped model
        changes = self.changes(run.recipe)
        if not self.tuned(run.recipe) or (
            "pretrain_epochs" in self.config["sweep"]["grid"] and "pretrain_epochs" not in changes
        ):
            return None
        if not self.settings(run)[1]["pretrain_epochs"]:
            return None
        if run.recipe != FINAL and shares_final_pretraining(self.variants[run.recipe]):
            return Run(FINAL, run.fold, run.seed)
        return run

    def adaptation_of(self, run: Run) -> dict:
        """An adaptation run's method, number of labelled site slices ("all": the whole
        adaptation pool) and draw."""
        method, n = run.recipe.removeprefix(ADAPT).split("~n")
        return {"method": method, "n": n if n == "all" else int(n), "draw": int(run.fold[4:])}

    def data_sets(self) -> list[str]:
        """Every data set fetched, as folders of results/data/: the training sources and the
        external sets."""
        return [*dict.fromkeys([*self.sources.values(), *self.external])]

    def trainings(self) -> dict[str, int]:
        """Trainings and shared pretrainings a whole run asks for, by kind."""
        owners = {self.pretraining_owner(run) for run in self.scored_runs()} - {None}
        return {
            "sweep": len(self.sweep_runs()),
            "final": len(self.final_runs()),
            "variants": len(self.variant_runs()),
            "adaptations": len(self.adaptation_runs()),
            "pretrainings": len(owners),
        }
