"""Which registered versions a ModelDeployment may serve, and where. Pure checks of a version's
registry manifest (llmops.registry.ModelVersion), each error naming the spec field at fault:

    gated          its gates passed (and it had some, unless spec.allowUngated)   else GatesNotPassed
    served_model   a full model, for spec.model and spec.rollout.canary.model     else WrongContent
    adapter        a LoRA adapter, for spec.engine.loraAdapters[]                 else WrongContent
    quantization   vLLM's --quantization for a version, from its manifest         else WrongContent
                   (content.quantization) or spec.engine.quantization when they agree
"""

from __future__ import annotations

from llmops.operators.modeldeployment.plan import Adapter
from llmops.registry import ModelVersion, RegistryError


class GatesNotPassed(RegistryError):
    """A version whose gates did not pass (or that has none, without spec.allowUngated)."""


class WrongContent(ValueError):
    """A version that cannot be served where the spec puts it (the manifest's `content` says why)."""


def served_model(version: ModelVersion, field_path: str) -> ModelVersion:
    """`version` if it holds a full model (what spec.model and a canary's model serve).

    Raises WrongContent, naming `field_path`, for an adapter-only version.
    """
    content = version.described
    if content.kind != "model":
        base = f" ({content.base})" if content.base else ""
        raise WrongContent(
            f"{field_path}: {version.name}:{version.version} is a LoRA adapter, not a full model;"
            f" serve its base{base} as spec.model and list the adapter under spec.engine.loraAdapters"
        )
    return version


def adapter(name: str, version: ModelVersion) -> Adapter:
    """The LoRA adapter `spec.engine.loraAdapters[name]` serves, from its version's manifest.

    The adapter's folder is the manifest's `content.adapter` (for a lora TrainingJob's version: its
    "adapter" sub-folder beside the merged model). Raises WrongContent, naming the field, for a
    version without an adapter (a full model is served as spec.model; a manifest written before
    `content` existed is read as a full model).
    """
    content = version.described
    if content.adapter is None:
        why = (
            "its manifest predates the content record and is read as a full model without an adapter"
            if version.content is None
            else f"its manifest says: a {'merged ' if content.merged else ''}full model, no adapter"
        )
        raise WrongContent(
            f"spec.engine.loraAdapters[{name}].model: {version.name}:{version.version} holds no LoRA"
            f" adapter ({why}); a full model is served as spec.model, not under loraAdapters"
        )
    return Adapter(name, version.name, version.version, content.adapter)


def gated(version: ModelVersion, field_path: str, allow_ungated: bool) -> ModelVersion:
    """`version` if it may be served: its gates passed, and it had gates unless `allow_ungated`
    (spec.allowUngated). Raises GatesNotPassed, naming `field_path`."""
    if not version.gates_passed:
        failed = ", ".join(g.metric for g in version.gates if not g.passed)
        raise GatesNotPassed(
            f"{field_path}: {version.name}:{version.version} did not pass its gates ({failed});"
            " only versions whose gates passed are served"
        )
    if version.ungated and not allow_ungated:
        raise GatesNotPassed(
            f"{field_path}: {version.name}:{version.version} was registered without any gate (its"
            " TrainingJob declared none); set spec.allowUngated: true to serve ungated versions"
        )
    return version


# compressed-tensors layouts whose vLLM kernels need 16-bit activations, with what they hold: int4
# weights (Marlin on the GPU, cpu_gemm_wna16 on the CPU); int8 weights and activations (CUTLASS's
# scaled_mm on the GPU; on x86 CPUs with AMX, Sapphire Rapids and later, vLLM 0.32 picks
# int8_scaled_mm_with_quant, "expect A to be bfloat16 or half"; only oneDNN's path, on CPUs without
# AMX, takes float32). At --dtype float32 vLLM stops as it loads the first layer.
SIXTEEN_BIT_ONLY = {"pack-quantized": "int4 weights", "int-quantized": "int8 weights and activations"}


def quantization(
    version: ModelVersion, engine_quantization: str | None, field_path: str, dtype: str = "auto"
) -> str | None:
    """vLLM's `--quantization` for serving `version` (the spec's `field_path`): what its manifest says
    its weights are (`content.quantization.method`, e.g. "compressed-tensors" for a quantize
    TrainingJob's version), so the user never repeats it; else `spec.engine.quantization` as written
    (which may ask vLLM to quantize an unquantized model as it loads it, e.g. fp8).

    Raises WrongContent when spec.engine.quantization names another method than the manifest, or
    when spec.engine.dtype (`dtype`) is float32 for a layout of SIXTEEN_BIT_ONLY (int4 weights, W4A16;
    int8 weights and activations, W8A8): vLLM would fail as it loads the model.
    """
    recorded = version.described.quantization
    if recorded is None:
        return engine_quantization
    if dtype == "float32" and recorded.format in SIXTEEN_BIT_ONLY:
        scheme = f", {recorded.scheme}" if recorded.scheme else ""
        raise WrongContent(
            f"spec.engine.dtype is float32, but {field_path} {version.name}:{version.version} holds"
            f" {SIXTEEN_BIT_ONLY[recorded.format]} ({recorded.format}{scheme}), whose vLLM kernels compute"
            " in 16 bits; set spec.engine.dtype to auto, bfloat16 or float16"
        )
    if engine_quantization is not None and engine_quantization != recorded.method:
        scheme = f" {recorded.scheme}" if recorded.scheme else ""
        raise WrongContent(
            f"spec.engine.quantization is {engine_quantization}, but {field_path}"
            f" {version.name}:{version.version} is quantized as {recorded.method}{scheme} (its manifest's"
            " content.quantization); remove spec.engine.quantization: the version says how it is stored"
        )
    return recorded.method
