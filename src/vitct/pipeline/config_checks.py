"""Checks of the config that a JSON schema cannot express.

Called from the Snakefile right after schema validation, so a bad value stops the run before any
job starts, with a message that names the key.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import re
from pathlib import Path

import jsonschema

from vitct.data.classes import CLASS_DIRS
from vitct.data.partition import ALL
from vitct.errors import UserError
from vitct.model.settings import SettingError, ViTConfig
from vitct.pipeline.plan import (
    DATASET,
    DEMO_EXTERNAL,
    FINAL,
    KAGGLE,
    MODEL_KEYS,
    PREPROCESS_KEYS,
    TRAINING_KEYS,
    run_settings,
)
from vitct.training.settings import TrainConfig


class ConfigError(UserError, ValueError):
    """A config value or a combination of them that cannot run; the message names the key."""


def validate_config(config: dict, schema: dict, schema_path: str) -> None:
    """Everything the Snakefile checks before any job, in place: an overlay's nulls dropped,
    command-line text typed, the schema (types, ranges, unknown keys, each named), its defaults
    filled in, then the rules a schema cannot state. Raises ConfigError naming the key."""
    from snakemake.utils import validate  # here: the package's other users need no Snakemake

    remove_nulled_keys(config)  # an overlay's `key: null` drops what the file below it set
    type_command_line_text(config, schema)
    problems = schema_problems(config, schema)
    if problems:
        raise ConfigError("\n  " + "\n  ".join(problems))
    validate(config, schema_path)  # fills in the defaults
    check(config, schema)
    order_keys(config)


# Mappings whose order means something: the grid's keys name its recipes in this order.
KEEP_ORDER = {("sweep", "grid")}


def order_keys(config: dict, path: tuple = ()) -> None:
    """Sort every mapping's keys in place (but those of KEEP_ORDER): Snakemake compares a rule's
    params as text, so a config whose keys were merely reordered would otherwise rerun the
    rules that read them, from the data on."""
    for key, value in config.items():
        if isinstance(value, dict):
            order_keys(value, (*path, key))
    if path not in KEEP_ORDER:
        items = sorted(config.items(), key=lambda item: str(item[0]))
        config.clear()
        config.update(items)


def type_command_line_text(config: dict, schema: dict) -> None:
    """Turn text into the number or boolean the schema asks for, in place.

    Snakemake's --config reads values nested in a mapping as text: `--config 'final={overrides:
    {epochs: 30}}'` gives '30', which the schema would refuse as "not of type 'integer'". Only
    values the schema wants as a number or boolean are touched, and only when the whole text
    reads as one; anything else is left for the schema to refuse. Model and training settings
    under sweep.grid, final.overrides and ablation.variants take the type of the setting.
    """
    _type_text(config, schema)
    props = schema["properties"]
    settings = {
        **props["model"]["properties"],
        **props["training"]["properties"],
        **_preprocess_keys(schema),
    }
    run = {"properties": settings}
    _type_text(
        _section(config, "sweep", "grid"),
        {"properties": {key: {"items": setting} for key, setting in settings.items()}},
    )
    _type_text(_section(config, "final", "overrides"), run)
    for variant in _section(config, "ablation", "variants").values():
        _type_text(variant, run)


def _section(config: dict, *keys: str) -> dict:
    """config[keys[0]][keys[1]]..., or {} where a section is missing or no mapping (the schema
    reports that)."""
    for key in keys:
        config = config.get(key) if isinstance(config, dict) else None
    return config if isinstance(config, dict) else {}


def _type_text(value, schema: dict):
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, str) and "string" not in types:
        text = value.strip()
        if "boolean" in types and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if {"integer", "number"} & set(types) and re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        if "number" in types:
            try:
                number = float(text)
            except ValueError:
                return value
            return number if math.isfinite(number) else value
    elif isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key in value:
            sub = props.get(key, extra)
            if isinstance(sub, dict):
                value[key] = _type_text(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_type_text(v, schema["items"]) for v in value]
    return value


def schema_problems(config: dict, schema: dict) -> list[str]:
    """Short messages, one per schema violation, each naming the config key (dotted path).

    snakemake.utils.validate then fills in the defaults; its own messages print the whole
    schema, so these come first.
    """
    problems = []
    validator = jsonschema.Draft202012Validator(schema)
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "additionalProperties":
            allowed = error.schema.get("properties", {})
            for key in sorted(set(error.instance) - set(allowed)):
                problems.append(
                    f"{where + '.' if where else ''}{key}: unknown key; "
                    f"{'known keys: ' + ', '.join(allowed) if allowed else 'not allowed here'}"
                )
        else:
            problems.append(f"{where or 'config'}: {error.message}")
    return problems


def check(config: dict, schema: dict | None = None) -> None:
    """Raise ConfigError naming the key for every cross-field rule the schema cannot state."""
    split = config["split"]
    if split["test"] + split["val"] >= 1:
        raise ConfigError(
            f"split.test ({split['test']:g}) and split.val ({split['val']:g}) leave no training "
            "images; each is a share, and together they must stay well under 1"
        )
    if config.get("evaluation", {}).get("folds", 0) == 1:
        raise ConfigError(
            "evaluation.folds: one fold leaves no other fold to train on; set 0 (no "
            "cross-validation) or 2 or more (5 is usual)"
        )
    if config["dataset"]["source"] == "local" and not config["dataset"]["path"]:
        raise ConfigError("dataset.path must name a folder or zip when dataset.source is local")
    demo = config["dataset"].get("demo", {})
    if config["dataset"]["source"] == "demo" and demo.get("format") == "dicom":
        if importlib.util.find_spec("pydicom") is None:  # before the fetch step, not in it
            raise ConfigError(
                "dataset.demo.format: dicom writes DICOM series with pydicom, which is not "
                "installed: pip install -e '.[dicom]', or set format: png"
            )
    external = config.get("evaluation", {}).get("external", {})
    sources = config["dataset"].get("sources", {})
    entries = [(f"evaluation.external.{n}", n, p) for n, p in external.items()]
    entries += [(f"dataset.sources.{n}", n, p) for n, p in sources.items()]
    for where, name, _ in entries:
        if name in (DATASET, ALL, *CLASS_DIRS, config["dataset"].get("name")):
            raise ConfigError(
                f"{where}: '{name}' names a folder or source of the pipeline's own; choose "
                "another name"
            )
        if where.startswith("dataset") and name in external:
            raise ConfigError(
                f"{where}: '{name}' is an external set's name too: a set is trained on or "
                "scored on, never both; choose another name"
            )
    _check_adaptation(config)
    for where, _, path in entries:
        if path.startswith(KAGGLE):
            continue
        if path.startswith(DEMO_EXTERNAL):
            from vitct.data.synthetic import SCANNERS  # here: it loads the image code

            if path.removeprefix(DEMO_EXTERNAL) not in SCANNERS:
                raise ConfigError(
                    f"{where}: '{path}' names no demo scanner; choose "
                    + " or ".join(DEMO_EXTERNAL + s for s in SCANNERS)
                )
            continue
        # Before any job: a wrong path would otherwise only fail after training.
        if not Path(path).expanduser().exists():
            raise ConfigError(
                f"{where}: '{path}' does not exist; point it at a folder (or zip) holding "
                f"COVID/ and non-COVID/ ({KAGGLE}OWNER/SLUG for a Kaggle dataset, "
                f"{DEMO_EXTERNAL}b for the demo's other scanner), or remove the entry"
            )
    known = MODEL_KEYS | TRAINING_KEYS
    variants = config.get("ablation", {}).get("variants", {})
    if FINAL in variants:
        raise ConfigError(
            f"ablation.variants.{FINAL}: '{FINAL}' is the final recipe's own name; choose "
            "another name for the variant"
        )
    sections = {
        "sweep.grid": config["sweep"]["grid"],
        "final.overrides": config["final"]["overrides"],
    }
    sections.update({f"ablation.variants.{name}": v for name, v in variants.items()})
    for section, settings in sections.items():
        for key in settings:
            if key not in known:
                raise ConfigError(
                    f"{section}.{key} is not a model or training setting; choose from "
                    f"{', '.join(sorted(known))}"
                )
    grid = config["sweep"]["grid"]
    for key in PREPROCESS_KEYS:
        if key in grid:
            # The final model's images must be known before the sweep ends (they are an input).
            raise ConfigError(
                f"sweep.grid.{key}: preprocessing cannot be swept; set preprocess.{key} for "
                f"the sweep and final.overrides.{key} for another final model"
            )
    overrides = config["final"]["overrides"]
    # Runs take their seed from training.seed and evaluation.seeds: a seed in the grid or the
    # final recipe would give every fold and seed one and the same.
    for section, settings in (("sweep.grid", grid), ("final.overrides", overrides)):
        if "seed" in settings:
            raise ConfigError(
                f"{section}.seed: runs take their seeds from training.seed (the sweep and the "
                "shipped model) and evaluation.seeds (the folds); set those instead"
            )
    if config.get("ablation", {}).get("cross_validate") and config.get("evaluation", {}).get(
        "folds"
    ):
        for name, changes in variants.items():
            if "seed" in changes:
                raise ConfigError(
                    f"ablation.variants.{name}.seed: the variants train on the folds' seeds "
                    "(evaluation.seeds) when ablation.cross_validate is true; remove the seed, "
                    "or set cross_validate: false for one run per variant"
                )
    for key in grid:
        if key in overrides:
            # The sweep must choose for the model that is trained: a swept value replaced
            # afterwards was never selected.
            raise ConfigError(
                f"final.overrides.{key}: {key} is swept (sweep.grid.{key}), so the final model "
                f"takes the value the sweep picks; remove {key} from final.overrides, or from "
                "sweep.grid and set it in its section"
            )
    for combo in itertools.product(*grid.values()):
        swept = {"sweep.grid": dict(zip(grid, combo, strict=True))}
        _check_run(config, swept, schema)
        final = {**swept, "final.overrides": overrides}
        _check_run(config, final, schema)
        for name, changes in variants.items():
            _check_run(config, {**final, f"ablation.variants.{name}": changes}, schema)


def _check_adaptation(config: dict) -> None:
    adaptation = config.get("adaptation", {})
    site = adaptation.get("site")
    if not site:
        return
    external = config.get("evaluation", {}).get("external", {})
    if site not in external:
        raise ConfigError(
            f"adaptation.site: '{site}' is no external set; name one of evaluation.external "
            f"({', '.join(external) or 'none configured'}), or add it there"
        )
    if adaptation.get("train_on_pool") and any(n != 0 for n in adaptation.get("labels", [])):
        raise ConfigError(
            "adaptation.train_on_pool: the whole adaptation pool is then training data, which "
            "leaves the learning curve nothing to draw from; set adaptation.labels: [] too"
        )


def _check_run(config: dict, layers: dict, schema: dict | None) -> None:
    """Check one run, built from `layers` (config section -> the settings it changes, in the
    order they apply), so that a message names the section where the user set the key."""
    changes = {key: value for layer in layers.values() for key, value in layer.items()}
    model, training = run_settings(config, changes)
    if schema is not None:
        # The swept values must obey the same schema as the sections they replace.
        for name, values in (("model", model), ("training", training)):
            sub = {**schema["properties"][name]["properties"], **_preprocess_keys(schema)}
            for key, value in values.items():
                if key in sub:
                    try:
                        jsonschema.validate(value, sub[key])
                    except jsonschema.ValidationError as e:
                        raise ConfigError(f"{_locate((key,), layers, name)}: {e.message}") from None
    vit = _built(ViTConfig, model, changes, layers, "model")
    _built(TrainConfig, training, changes, layers, "training")
    if training.get("pretrain_epochs", 0) > 0 and vit.grid_size < 2:
        where = _locate(("patch_size", "pretrain_epochs"), layers, "model")
        raise ConfigError(
            f"{where}: patch_size {vit.patch_size} "
            f"makes one patch of the {vit.image_size} px image, and masked-image pretraining "
            f"needs two at least, one to hide and one to show (run {changes}); choose a "
            "smaller patch_size or pretrain_epochs: 0"
        )


def _built(settings_class, values: dict, changes: dict, layers: dict, section: str):
    """The settings object of one run, or a ConfigError naming the key to edit: the class checks
    the rules that tie one key to another, and its SettingError names the keys they tie."""
    try:
        return settings_class.from_dict(values)
    except SettingError as e:
        raise ConfigError(f"{_locate(e.keys, layers, section)}: {e} (run {changes})") from None
    except ValueError as e:  # a rule that names no key: the run's own section, at least
        where = list(layers)[-1] if layers else section
        raise ConfigError(f"{where}: {e} (run {changes})") from None


def _preprocess_keys(schema: dict) -> dict:
    return {k: schema["properties"]["preprocess"]["properties"][k] for k in PREPROCESS_KEYS}


def _locate(keys: tuple[str, ...], layers: dict, section: str) -> str:
    """The config key a user must edit, of the settings a rule ties (`keys`, the one to blame
    first): the one set in the run's last layer (an ablation variant, say), else in the one
    before it, else the first key in its own section of the config."""
    for where, changes in reversed(layers.items()):
        for key in keys:
            if key in changes:
                return f"{where}.{key}"
    key = keys[0]
    return f"{'preprocess' if key in PREPROCESS_KEYS else section}.{key}"


# Config overlays: `--configfile base.yaml overlay.yaml` merges the overlay into the base (Snakemake
# merges mappings key by key, in order), so an overlay states only what it changes; a key it sets
# to null is removed, which lets it drop what the file below it adds (an ablation variant, say).
def remove_nulled_keys(config: dict) -> None:
    """Delete, in place and at every depth, the keys whose value is None. No setting takes
    null, so a None can only be an overlay's removal."""
    for key in [k for k, v in config.items() if v is None]:
        del config[key]
    for value in config.values():
        if isinstance(value, dict):
            remove_nulled_keys(value)
