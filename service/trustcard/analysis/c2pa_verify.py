"""C2PA manifests read and validated by the C2PA project's own library (c2pa-python).

Validation covers the claim signature, the signing certificate's chain against the configured
trust anchors, and the hash bindings between the manifest and the asset's bytes. Its outcome is
one of VALIDATIONS; only "valid" (signature good, hashes match, signer chains to a trust anchor)
makes what the manifest declares worth believing.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import c2pa

Validation = Literal[
    "valid", "invalid_signature", "untrusted_signer", "asset_tampered", "no_manifest"
]
VALIDATIONS: tuple[Validation, ...] = (
    "valid",
    "invalid_signature",
    "untrusted_signer",
    "asset_tampered",
    "no_manifest",
)
# Failure codes of the C2PA spec saying the asset's bytes no longer match the manifest's hashes.
_TAMPER_CODES = (
    "assertion.dataHash.mismatch",
    "assertion.boxesHash.mismatch",
    "assertion.bmffHash.mismatch",
    "assertion.collectionHash.mismatch",
)
_UNTRUSTED_CODES = ("signingCredential.untrusted",)


@dataclass(frozen=True)
class Declaration:
    """What a manifest says about the asset's origin, and whether validation backs it."""

    validation: Validation
    reason: str  # the validator's own words for the outcome
    signer: str = ""
    claim_generator: str = ""
    source_types: list[str] = field(default_factory=list)  # digitalSourceType URIs, in order
    software_agents: list[str] = field(default_factory=list)


@lru_cache(maxsize=4)
def load_trust_anchors(path: str) -> str:
    """The PEM bundle at path ("" for none); read once per process and path."""
    if not path:
        return ""
    text = Path(path).read_text(encoding="ascii")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"C2PA trust anchors file {path} holds no PEM certificate")
    return text


def read_manifest(data: bytes, mime_type: str, trust_anchors_pem: str) -> Declaration:
    """Read and validate the active C2PA manifest embedded in data."""
    settings: dict[str, Any] = {"verify": {"verify_trust": True}}
    if trust_anchors_pem:
        settings["trust"] = {"trust_anchors": trust_anchors_pem}
    context = c2pa.Context(settings=c2pa.Settings.from_dict(settings))
    try:
        reader = c2pa.Reader.try_create(mime_type or None, io.BytesIO(data), None, context)
    except c2pa.C2paError as exc:
        # A manifest so broken the library cannot parse it: nothing in it can be trusted.
        return Declaration("invalid_signature", f"unreadable manifest ({exc})"[:300])
    if reader is None:
        return Declaration("no_manifest", "no C2PA manifest")
    with reader:
        store = json.loads(reader.json())
        manifest = reader.get_active_manifest() or {}
    validation, reason = _classify(store)
    actions = [
        action
        for assertion in manifest.get("assertions", [])
        if str(assertion.get("label", "")).startswith("c2pa.actions")
        for action in assertion.get("data", {}).get("actions", [])
    ]
    generators = manifest.get("claim_generator_info") or []
    return Declaration(
        validation=validation,
        reason=reason,
        signer=str(manifest.get("signature_info", {}).get("issuer", "")),
        claim_generator=str(
            manifest.get("claim_generator") or (generators[0].get("name", "") if generators else "")
        ),
        source_types=[str(a["digitalSourceType"]) for a in actions if a.get("digitalSourceType")],
        software_agents=[name for a in actions if (name := _agent_name(a.get("softwareAgent")))],
    )


def _classify(store: dict[str, Any]) -> tuple[Validation, str]:
    """Map the library's validation state and failure codes to one Validation."""
    results = store.get("validation_results", {}).get("activeManifest", {})
    failures = results.get("failure", []) or store.get("validation_status", [])
    codes = {str(f.get("code", "")) for f in failures}
    explained = "; ".join(f"{f.get('code')}: {f.get('explanation', '')}" for f in failures)
    state = store.get("validation_state", "")
    if codes & set(_TAMPER_CODES):
        return "asset_tampered", explained
    if state == "Trusted" and not failures:
        return "valid", "signature valid, asset hashes match, signer chains to a trust anchor"
    if codes and codes <= set(_UNTRUSTED_CODES):
        return "untrusted_signer", explained
    return "invalid_signature", explained or f"validation state {state or 'unknown'}"


def _agent_name(agent: object) -> str:
    if isinstance(agent, dict):
        return str(agent.get("name", ""))
    return str(agent or "")
