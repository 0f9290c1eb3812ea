"""Loading and validating params.yaml.

Each family section holds its recipe as published (the `seed` profile) plus an
`embedded` subsection that overrides only what the offline CPU profile must
change. The top-level `profile` key picks which one runs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from retrieval_pipeline.core.errors import ParamsError

PROFILES = ("embedded", "seed")

# A random seed as numpy, torch and the samplers accept it: 0 to 2**32 - 1.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class Section(BaseModel):
    """Base for every params section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingSection(Section):
    """The trainer settings that every family's `train` section has."""

    batch_size: PositiveInt
    warmup_ratio: float = Field(ge=0, lt=1)
    bf16: bool  # used only on a GPU that supports it
    logging_steps: PositiveInt


class FamilyParams(Section):
    """A family's params: its seed and one section per stage, which each family narrows to its own types."""

    seed: Seed
    data: Section
    model: Section
    mine: Section
    train: Section
    evaluate: Section


STAGE_SECTIONS = tuple(name for name in FamilyParams.model_fields if name != "seed")


ParamsT = TypeVar("ParamsT", bound=BaseModel)


def read_params_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ParamsError(f"{path}: cannot read the params file ({error.strerror})") from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return document


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def overrides(path: str, overridden: Collection[str]) -> bool:
    """Whether the embedded override sets `path` (a dotted key inside a family section), a key inside it, or a
    section that holds it."""
    return any(key == path or key.startswith(f"{path}.") or path.startswith(f"{key}.") for key in overridden)


def profile_key(family: str, path: str, profile: str | None, overridden: Collection[str]) -> str:
    """The params key a user edits to change `path` of `family` under `profile`: the embedded override's key where
    it sets the value (there it wins), the recipe's key otherwise."""
    if profile == "embedded" and overrides(path, overridden):
        return f"{family}.embedded.{path}"
    return f"{family}.{path}"


def field_exists(model: type[BaseModel], path: str) -> bool:
    """Whether the dotted `path` names a field of `model` (through nested sections, optional or not)."""
    owner: Any = model
    for part in path.split("."):
        fields = owner.model_fields if isinstance(owner, type) and issubclass(owner, BaseModel) else {}
        if part not in fields:
            return False
        annotation = fields[part].annotation
        nested = [arg for arg in (*get_args(annotation), annotation)
                  if isinstance(arg, type) and issubclass(arg, BaseModel)]
        owner = nested[0] if nested else None
    return True


def nearest(key: str, valid: Iterable[str]) -> str:
    """What to say after "unknown key": the valid key it most likely misspells, or the valid keys."""
    valid = sorted(valid)
    guess = get_close_matches(key, valid, n=1, cutoff=0.6)
    return f"did you mean '{guess[0]}'?" if guess else f"expected one of: {', '.join(valid)}"


def _describe(error: dict[str, Any], model: type[BaseModel], prefix: str, profile: str | None = None,
              overridden: Collection[str] = ()) -> str:
    location = ".".join(str(part) for part in error["loc"])
    family, _, inner = prefix.partition(".")
    path = ".".join(part for part in (inner, location) if part)
    key = profile_key(family, path, profile, overridden) if path else prefix
    if error["type"] == "extra_forbidden":
        owner: Any = model
        for part in error["loc"][:-1]:
            is_model = isinstance(owner, type) and issubclass(owner, BaseModel)
            field = owner.model_fields.get(str(part)) if is_model else None
            owner = field.annotation if field is not None else None
        known = list(owner.model_fields) if isinstance(owner, type) and issubclass(owner, BaseModel) else []
        if owner is model and issubclass(model, FamilyParams):
            known.append("embedded")  # a family section's own key beside its stage sections
        return f"{key}: unknown key; {nearest(str(error['loc'][-1]), known)}" if known else f"{key}: unknown key"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{key}: {error['msg']}{shown}"


def select_profile(path: Path, family: str) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """The family's section with its profile's overrides applied, the profile's name, and the keys (dotted, inside
    the section) whose value the embedded override sets."""
    document = read_params_file(path)
    profile = document.get("profile", "embedded")
    if profile not in PROFILES:
        raise ParamsError(f"{path}: profile: expected one of {', '.join(PROFILES)} (got {profile!r})")
    if family not in document:
        raise ParamsError(f"{path}: no '{family}' section; expected the family's recipe under '{family}:'")
    section = document[family]
    if not isinstance(section, dict):
        raise ParamsError(f"{path}: {family}: expected a mapping of the family's params")
    recipe = {key: value for key, value in section.items() if key != "embedded"}
    overrides = section.get("embedded")
    if not isinstance(overrides, dict) or set(STAGE_SECTIONS) - set(overrides):
        raise ParamsError(
            f"{path}: {family}.embedded: expected a mapping with the sections {', '.join(STAGE_SECTIONS)} "
            "(each may be {}), so that dvc.yaml can track every override")
    unknown = set(overrides) - set(STAGE_SECTIONS)
    if unknown:
        section_name = sorted(unknown)[0]
        raise ParamsError(f"{path}: {family}.embedded.{section_name}: unknown section; "
                          f"{nearest(section_name, STAGE_SECTIONS)}")
    merged = deep_merge(recipe, overrides) if profile == "embedded" else recipe
    return profile, merged, tuple(".".join(key) for key, value in _leaves(overrides) if value != {})


def _leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    leaves = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            leaves += _leaves(value, (*prefix, key))
        else:
            leaves.append(((*prefix, key), value))
    return leaves


def _at(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def ignored_changes(document: dict[str, Any], committed: dict[str, Any], family: str) -> list[str]:
    """The family's params that differ from `committed` (params.yaml at the last commit) but that the active
    profile does not read: a recipe value its `embedded` override shadows, or an override under `profile: seed`.
    Each is named with the key that wins, so that `dvc exp run -S` on the wrong key is not silently ignored."""
    section, before = document.get(family), committed.get(family)
    if not isinstance(section, dict) or not isinstance(before, dict):
        return []
    overrides = section.get("embedded") if isinstance(section.get("embedded"), dict) else {}
    profile = document.get("profile", "embedded")
    messages = []
    for path, winner in _leaves(overrides):
        key = ".".join(path)
        if profile == "embedded" and _at(section, path) != _at(before, path):
            messages.append(f"{family}.{key} changed ({_at(before, path)!r} -> {_at(section, path)!r}) but has no "
                            f"effect: profile 'embedded' uses {family}.embedded.{key} = {winner!r}; set that key")
        elif profile == "seed" and winner != _at(before, ("embedded", *path)):
            messages.append(f"{family}.embedded.{key} changed (-> {winner!r}) but has no effect: profile 'seed' "
                            f"uses {family}.{key} = {_at(section, path)!r}; set that key")
    return messages


def load_params(path: Path, family: str, model: type[ParamsT],
                applied: dict[str, Any] | None = None) -> tuple[str, ParamsT, tuple[str, ...]]:
    """The profile, the family's validated params (checked before any work starts), and the keys the embedded
    override sets; `applied` (a top-level switch's values inside the section) is merged in after the profile."""
    profile, merged, overridden = select_profile(path, family)
    merged = deep_merge(merged, applied or {})
    where = f" (profile '{profile}', after applying {family}.embedded)" if profile == "embedded" else ""
    return profile, validate_section(merged, model, path, family, where, profile, overridden), overridden


def validate_section(section: Any, model: type[ParamsT], path: Path, key: str, where: str = "",
                     profile: str | None = None, overridden: Collection[str] = ()) -> ParamsT:
    """`section` (params.yaml's `key`) as `model`, or a ParamsError naming the file and every bad key as the user
    edits it under `profile` (the embedded override's key where the override sets it)."""
    try:
        return model.model_validate(section)
    except ValidationError as error:
        lines = [_describe(item, model, key, profile, overridden) for item in error.errors()]
        raise ParamsError(f"{path}{where}:\n  " + "\n  ".join(lines)) from None


