"""Turn what the user typed after ``--model`` into a :class:`ModelShape`.

Order: a local ``config.json`` or model directory; the embedded catalog; the Hugging
Face Hub (``config.json`` only, cached by huggingface_hub, needs the ``[hub]`` extra and
a network). Remote code is never executed: only the JSON is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from forge_advisor.errors import ForgeError, did_you_mean
from forge_advisor.shapes.catalog import catalog_models, find_catalog_model
from forge_advisor.shapes.model import ModelShape
from forge_advisor.shapes.registry import UnsupportedArchitecture, build_shape

__all__ = ["load_config", "load_shape", "shape_from_config"]

_MAX_CONFIG_BYTES = 16 << 20  # a config.json is a few KiB; refuse to slurp huge files


def _read_json(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise ForgeError(f"{path}: {path.stat().st_size} bytes is too large for a config.json")
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ForgeError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise ForgeError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ForgeError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise ForgeError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _short(text: str, n: int = 80) -> str:
    """``text`` for a one-line message: at most ``n`` characters and its length."""
    return text if len(text) <= n else f"{text[:n]}… ({len(text):,} characters)"


def _from_path(model: str) -> tuple[dict[str, Any], str] | None:
    path = Path(model).expanduser()
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as exc:  # e.g. a 5,000-character name: "File name too long"
        raise ForgeError(f"--model '{_short(model)}' is not a catalog id, a readable path or a Hub id "
                         f"({exc.strerror or exc})") from None
    if is_dir:
        cfg = path / "config.json"
        if not cfg.is_file():
            raise ForgeError(f"{path}: directory has no config.json")
        return _read_json(cfg), str(cfg)
    if is_file:
        return _read_json(path), str(path)
    looks_local = model.startswith((".", "/", "~")) or model.endswith(".json") or os.sep in model and model.count("/") > 1
    if looks_local:
        raise ForgeError(f"{model}: no such file or directory")
    return None


def _hub_reachable(timeout: float = 1.5) -> bool:
    """A TCP connect to the Hub endpoint: offline machines answer in milliseconds here
    instead of huggingface_hub's retries with back-off (~25 s of warnings)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub(model: str) -> tuple[dict[str, Any], str] | None:
    if model.count("/") != 1 or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return None
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
        from huggingface_hub.utils import logging as hub_logging
    except ImportError:
        return None
    try:
        cached = try_to_load_from_cache(model, "config.json")
    except (OSError, ValueError):  # not a valid repo id (HFValidationError), a name too long for a path
        return None
    if isinstance(cached, str):
        return _read_json(Path(cached)), f"hub-cache:{model}"
    if not _hub_reachable():
        return None
    verbosity = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    try:
        path = hf_hub_download(model, "config.json")
    except Exception:  # gated, missing, network: the caller explains the options
        return None
    finally:
        hub_logging.set_verbosity(verbosity)
    return _read_json(Path(path)), f"hub:{model}"


def offline_shape(model: str) -> ModelShape | None:
    """The shape of a local config or a catalog model, without the network; None for a Hub
    id, or when the architecture is one the estimator cannot read (training may still run)."""
    try:
        local = _from_path(model)
        entry = None if local is not None else find_catalog_model(model)
        if local is None and entry is None:
            return None
        config, source = local if local is not None else (dict(entry.config), f"catalog:{entry.id}")  # type: ignore[union-attr]
        return shape_from_config(config, model if local is not None else entry.id, source)  # type: ignore[union-attr]
    except ForgeError:  # UnsupportedArchitecture included
        return None


def load_config(model: str) -> tuple[dict[str, Any], str, str]:
    """``(config, display_name, source)`` for a catalog id, a path or a Hub id."""
    if not model or not model.strip():
        raise ForgeError("--model is empty: give a catalog id, a config.json path or a Hub id")
    local = _from_path(model)
    if local is not None:
        cfg, source = local
        return cfg, model, source
    entry = find_catalog_model(model)
    if entry is not None:
        return dict(entry.config), entry.id, f"catalog:{entry.id}"
    hub = _from_hub(model)
    if hub is not None:
        cfg, source = hub
        return cfg, model, source
    hint = did_you_mean(model, [m.id for m in catalog_models()] + [m.id.split("/")[-1] for m in catalog_models()]) if len(model) <= 200 else ""
    raise ForgeError(
        f"unknown model '{_short(model)}'{hint}: it is not in the embedded catalog (forge-advisor models), "
        f"so give a local config.json or model directory, or install forge-advisor[hub] and go online for a Hub id"
    )


def shape_from_config(config: dict[str, Any], name: str, source: str | None = None) -> ModelShape:
    """Parse a config dict; unknown architectures fall back to meta-device instantiation."""
    try:
        shape = build_shape(config, name, source)
    except UnsupportedArchitecture as exc:
        from forge_advisor.shapes import meta

        shape = meta.shape_from_meta(config, name, exc)
    shape.native  # validate in Rust now, so errors surface at load time  # noqa: B018
    quant = config.get("quantization_config")
    if isinstance(quant, dict) and isinstance(quant.get("quant_method"), str):
        object.__setattr__(shape, "checkpoint_quantization", quant["quant_method"])
    return shape


def load_shape(model: str) -> ModelShape:
    config, name, source = load_config(model)
    shape = shape_from_config(config, name, source)
    object.__setattr__(shape, "source", source)
    return shape
