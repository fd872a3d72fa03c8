"""TrainingJob: pre-train or fine-tune a model on Ray, evaluate it, and register a new model version.

`TrainingJobSpec` stands alone so that another resource can embed it as a template (none does yet).
One module for the whole API of the kind (over 400 lines): its spec and status types, their CEL
rules and condition reasons are the CRD's single source (`make crds`), read together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from llmops.api.common import (
    ApiModel,
    CommonReason,
    DataUri,
    DnsLabel,
    DnsSubdomain,
    Fraction,
    ModelReference,
    ObjectStorageLocation,
    PhoneRegion,
    Resources,
    RetentionDays,
    Rule,
    S3Connection,
    ShortText,
    Status,
    StoreRetention,
    Url,
    exactly_one,
    phone_regions_field,
    retention_days_field,
)

MethodType = Literal["pretrain", "full", "lora", "qlora", "quantize", "distill"]
QuantizationScheme = Literal["W8A8", "W4A16", "FP8_DYNAMIC"]
QuantizationAlgorithm = Literal["RTN", "GPTQ", "SmoothQuantGPTQ"]
GateCompare = Literal["value", "ratio", "difference"]
Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]
Stage = Literal["Queued", "PreparingData", "Training", "Compressing", "Evaluating", "Registering", "Done"]
PiiEntity = Literal["email", "phone", "creditCard", "ipAddress", "name"]
EvalMetric = Literal["exact_match", "accuracy", "f1", "rouge_l", "bleu", "perplexity"]
SecurityProbe = Literal["promptInjection", "jailbreak", "piiExtraction", "systemPromptLeak"]
GateOperator = Literal["<", "<=", ">", ">="]
# A module name or "re:<regex>", as llm-compressor's `ignore` lists take them.
ModuleName = Annotated[str, StringConstraints(min_length=1, max_length=256)]

# A checkpoint in Hugging Face layout: in S3, on a mounted volume, or on the Hub (hf://org/name).
ModelUri = Annotated[
    str, StringConstraints(max_length=1024, pattern=r"^(s3://[^/\s]+(/\S*)?|/\S*|hf://\S+)$")
]
FieldName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# Keys of status.evaluation: "<dataset>/<metric>", "perplexity", "bias/gap", "security/leakage".
MetricName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.:/]*$")
]


class Architecture(ApiModel):
    """Shape of a decoder-only transformer trained from scratch."""

    cel_rules = (
        Rule(
            "self.hiddenSize % self.heads == 0",
            "hiddenSize must be a multiple of heads",
            lambda m: m.hidden_size % m.heads == 0,
        ),
        Rule(
            "!has(self.kvHeads) || self.heads % self.kvHeads == 0",
            "heads must be a multiple of kvHeads",
            lambda m: m.kv_heads is None or m.heads % m.kv_heads == 0,
        ),
    )

    family: Literal["llama"] = Field("llama", description="Model family; decides the layer layout.")
    hidden_size: int = Field(ge=8, le=65536, description="Width of the hidden state.")
    layers: int = Field(ge=1, le=512, description="Number of transformer blocks.")
    heads: int = Field(ge=1, le=1024, description="Attention heads per block.")
    kv_heads: int | None = Field(
        None, ge=1, le=1024, description="Key/value heads for grouped-query attention; defaults to heads."
    )
    intermediate_size: int = Field(ge=8, le=262144, description="Width of the feed-forward layer.")
    vocab_size: int = Field(
        ge=32,
        le=1048576,
        description="Tokenizer vocabulary size; a distill student's must hold every id of the teacher's.",
    )
    max_position_embeddings: int = Field(ge=16, le=1048576, description="Longest sequence the model handles.")
    tokenizer: ModelUri | None = Field(
        None,
        description=(
            "Tokenizer to reuse (Hugging Face layout); omit to train a BPE tokenizer on the data (method"
            " distill: omit to reuse the teacher's)."
        ),
    )


class TrainingModel(ApiModel):
    """What training starts from: a registered model, a checkpoint, or a fresh architecture."""

    cel_rules = (
        Rule(
            "[has(self.base), has(self.baseModel), has(self.architecture)].filter(x, x).size() == 1",
            "set exactly one of base, baseModel or architecture",
            lambda m: exactly_one(m.base, m.base_model, m.architecture),
        ),
    )

    base: ModelReference | None = Field(None, description="A version in the llmops registry to start from.")
    base_model: ModelUri | None = Field(
        None, description="A checkpoint in Hugging Face layout: s3://bucket/key, /path, or hf://org/name."
    )
    architecture: Architecture | None = Field(
        None, description="Initialise a new model (method pretrain, or the student of method distill)."
    )


class TrafficFeedback(ApiModel):
    """Keep only the exchanges users rated at least this well."""

    name: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$")
    ] = Field(description="Feedback name, as clients send it to the gateway, e.g. thumbs.")
    min_value: float = Field(
        description=(
            "Every user's latest rating of that name must be a number at least this (true counts as 1,"
            " false as 0); an exchange nobody rated is left out."
        )
    )


class ServedTraffic(ApiModel):
    """The chat exchanges a ModelDeployment's gateway sampled, as chat-format training data."""

    location: ObjectStorageLocation = Field(
        description=(
            "Where the gateway writes its samples: the ModelDeployment's"
            " spec.gateway.payloadSampling.destination, with a Secret that may read it."
        )
    )
    feedback: TrafficFeedback | None = Field(
        None, description="Keep only exchanges rated at least minValue; omit to keep every exchange."
    )
    since_seconds: int | None = Field(
        None,
        ge=1,
        description="Keep exchanges at most this old when the job reads them (as kubectl logs --since).",
    )


class DataSource(ApiModel):
    """One input dataset: files at a URI, or the traffic a ModelDeployment served."""

    cel_rules = (
        Rule(
            "has(self.uri) != has(self.servedTraffic)",
            "set exactly one of uri or servedTraffic",
            lambda m: exactly_one(m.uri, m.served_traffic),
        ),
    )

    uri: DataUri | None = Field(
        None, description="s3://bucket/key or an absolute path; a trailing / reads every file under it."
    )
    format: Literal["jsonl", "parquet", "text", "chat"] = Field(
        "jsonl",
        description=(
            "File format. chat: JSON lines whose messagesField holds an OpenAI-style conversation"
            " ([{role: system|user|assistant, content}]), rendered with the model's chat template; the"
            " loss counts the assistant turns only. Ignored for servedTraffic (always chat)."
        ),
    )
    text_field: FieldName = Field("text", description="Field that holds the text, for jsonl and parquet.")
    # None rather than a default value: a run encoded before this field existed keeps its bytes.
    messages_field: FieldName | None = Field(
        None, description='Field that holds the conversation, for format chat; "messages" when omitted.'
    )
    served_traffic: ServedTraffic | None = Field(
        None,
        description=(
            "The chat exchanges the gateway sampled (status 200, chat endpoint), optionally filtered by"
            " user feedback and age; prepared like chat data (PII scrubbing required)."
        ),
    )


class Dedup(ApiModel):
    """Drop duplicate documents."""

    method: Literal["exact", "near"] = Field(
        "exact", description="exact compares content hashes; near uses MinHash similarity."
    )
    threshold: float = Field(
        0.85,
        gt=0,
        le=1,
        description="Jaccard similarity at which near duplicates are dropped; ignored for exact.",
    )


class Pii(ApiModel):
    """Find personal data before training."""

    enabled: bool = Field(True, description="Scan for personal data.")
    entities: list[PiiEntity] = Field(
        ["email", "phone", "creditCard", "ipAddress"],
        max_length=5,
        description="Kinds of personal data to look for.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    regions: list[PhoneRegion] = phone_regions_field()
    action: Literal["redact", "drop"] = Field(
        "redact", description="redact replaces each finding with a placeholder; drop removes the document."
    )


class Tokenization(ApiModel):
    """How text becomes training sequences."""

    block_size: int = Field(
        1024, ge=8, le=1048576, description="Tokens per training sequence; documents are packed into blocks."
    )


class Augmentation(ApiModel):
    """A text augmentation applied to training examples."""

    type: Literal["randomDeletion", "randomSwap", "randomInsertion"] = Field(
        description="What to do to words."
    )
    probability: float = Field(0.1, gt=0, le=1, description="Chance that each word is changed.")
    copies: int = Field(1, ge=1, le=8, description="Augmented copies added per example.")


class Preparation(ApiModel):
    """Steps that turn raw sources into training and validation sets, in the order listed."""

    cel_rules = (
        Rule(
            "!has(self.minLength) || !has(self.maxLength) || self.minLength <= self.maxLength",
            "minLength must not exceed maxLength",
            lambda m: m.min_length is None or m.max_length is None or m.min_length <= m.max_length,
        ),
    )

    normalize: bool = Field(True, description="Unicode NFKC normalisation and whitespace clean-up.")
    min_length: int | None = Field(None, ge=0, description="Drop documents shorter than this, in characters.")
    max_length: int | None = Field(None, ge=1, description="Drop documents longer than this, in characters.")
    dedup: Dedup | None = Field(None, description="Deduplication; omit to keep duplicates.")
    pii: Pii | None = Field(None, description="Personal data detection; omit to skip it.")
    tokenization: Tokenization = Field(default_factory=Tokenization, description="Tokenization and packing.")
    validation_split: float = Field(
        0.05, ge=0, lt=1, description="Fraction of documents held out for validation loss and perplexity."
    )
    augmentation: list[Augmentation] = Field(
        default_factory=list,
        max_length=3,
        description="Augmentations of the training split; one entry per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class Data(ApiModel):
    """Training data: where it is and how to prepare it."""

    cel_rules = (
        Rule(
            "!self.sources.exists(s, has(s.servedTraffic)) || (has(self.preparation)"
            " && has(self.preparation.pii)"
            " && (!has(self.preparation.pii.enabled) || self.preparation.pii.enabled))",
            "sources with servedTraffic need preparation.pii (enabled): served traffic is what users typed",
            lambda m: (
                not any(s.served_traffic for s in m.sources)
                or (m.preparation.pii is not None and m.preparation.pii.enabled)
            ),
            field_path=".preparation",
        ),
    )

    sources: list[DataSource] = Field(
        min_length=1, max_length=32, description="Input datasets, read in order."
    )
    preparation: Preparation = Field(default_factory=Preparation, description="Preparation pipeline.")
    s3: S3Connection | None = Field(
        None, description="Endpoint and credentials for s3:// sources; defaults to those of output.registry."
    )


class EarlyStopping(ApiModel):
    """Stop when validation loss stops improving."""

    patience: int = Field(3, ge=1, le=1000, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(
        0.0, ge=0, description="Smallest drop in validation loss that counts as improvement."
    )


class Hyperparameters(ApiModel):
    """Optimisation settings."""

    epochs: int = Field(1, ge=1, le=10000, description="Passes over the training set.")
    max_steps: int | None = Field(
        None, ge=1, le=1000000000, description="Stop after this many optimiser steps; overrides epochs."
    )
    learning_rate: float = Field(2.0e-5, gt=0, le=1, description="Peak learning rate.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "cosine", description="Learning-rate decay after warm-up."
    )
    batch_size: int = Field(8, ge=1, le=65536, description="Sequences per worker per micro-step.")
    gradient_accumulation: int = Field(1, ge=1, le=4096, description="Micro-steps per optimiser step.")
    warmup_steps: int = Field(0, ge=0, le=1000000000, description="Steps of linear learning-rate warm-up.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout probability in the model.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy loss.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    early_stopping: EarlyStopping | None = Field(
        None, description="Early stopping; omit to train to the end."
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("no", description="Mixed-precision mode.")
    seed: int = Field(42, ge=0, le=4294967295, description="Random seed for data order and initialisation.")


class LoRA(ApiModel):
    """Low-rank adapter settings."""

    r: int = Field(16, ge=1, le=1024, description="Adapter rank.")
    alpha: int = Field(32, ge=1, le=4096, description="Scaling numerator; the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        max_length=64,
        description="Names of the linear layers that get adapters.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class Quantization(ApiModel):
    """Post-training quantization of the parent version (spec.model.base) with llm-compressor.

    The saved checkpoint is in the compressed-tensors format, which vLLM loads natively; the registered
    version's manifest says so (content.quantization), and a ModelDeployment serving it passes the
    engine's quantization argument by itself. Schemes are llm-compressor's preset names: W8A8 (int8
    weights per channel, dynamic per-token int8 activations), W4A16 (int4 weights in groups of 128,
    16-bit activations), FP8_DYNAMIC (fp8 weights per channel, dynamic fp8 activations).
    """

    cel_rules = (
        Rule(
            "self.scheme != 'FP8_DYNAMIC' || !has(self.algorithm) || self.algorithm == 'RTN'",
            "scheme FP8_DYNAMIC takes algorithm RTN only (it needs no calibration)",
            lambda m: m.scheme != "FP8_DYNAMIC" or m.algorithm == "RTN",
        ),
        Rule(
            "!has(self.algorithm) || self.algorithm != 'SmoothQuantGPTQ' || self.scheme == 'W8A8'",
            "algorithm SmoothQuantGPTQ applies to scheme W8A8 only (SmoothQuant moves activation outliers"
            " into the weights, which only helps when activations are quantized too)",
            lambda m: m.algorithm != "SmoothQuantGPTQ" or m.scheme == "W8A8",
        ),
        Rule(
            "!has(self.smoothingStrength) || (has(self.algorithm) && self.algorithm == 'SmoothQuantGPTQ')",
            "smoothingStrength applies to algorithm SmoothQuantGPTQ only",
            lambda m: m.smoothing_strength is None or m.algorithm == "SmoothQuantGPTQ",
        ),
    )

    scheme: QuantizationScheme = Field(
        description="W8A8 (int8 weights and activations), W4A16 (int4 weights) or FP8_DYNAMIC (fp8)."
    )
    algorithm: QuantizationAlgorithm = Field(
        "RTN",
        description=(
            "RTN rounds each weight to the nearest level (no calibration data); GPTQ corrects the rounding"
            " error layer by layer on calibration data (Frantar et al. 2022); SmoothQuantGPTQ first"
            " migrates activation outliers into the weights (Xiao et al. 2022), then runs GPTQ."
        ),
    )
    calibration_samples: int = Field(
        256,
        ge=1,
        le=65536,
        description=(
            "Prepared training sequences (spec.data, tokenized into blocks) used to calibrate GPTQ and"
            " SmoothQuant; RTN uses none."
        ),
    )
    ignore: list[ModuleName] = Field(
        ["lm_head"],
        max_length=256,
        description='Modules left unquantized: names, or "re:<regex>" patterns as llm-compressor takes them.',
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    smoothing_strength: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="SmoothQuant's migration strength alpha (SmoothQuantGPTQ only); 0.8 when omitted.",
    )


class Distillation(ApiModel):
    """Knowledge distillation: train the student (spec.model) to match a teacher's next-token distribution.

    Loss per counted token: alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) +
    (1 - alpha) * cross-entropy (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural
    Network"; T^2 keeps the gradient's scale as T changes). Teacher and student share one tokenizer.
    """

    teacher: ModelReference = Field(description="The registered version whose distribution is learned.")
    temperature: float = Field(
        2.0, gt=0, le=100, description="Softening temperature T of both distributions."
    )
    alpha: Fraction = Field(
        0.5, description="Weight of the distillation (KL) term; 1 - alpha weights the usual cross-entropy."
    )


class Method(ApiModel):
    """How to train."""

    cel_rules = (
        Rule(
            "!has(self.lora) || self.type in ['lora', 'qlora']",
            "lora settings apply only to the lora and qlora methods",
            lambda m: m.lora is None or m.type in ("lora", "qlora"),
        ),
        Rule(
            "(self.type == 'quantize') == has(self.quantization)",
            "method quantize needs quantization settings, and quantization applies to method quantize only",
            lambda m: (m.type == "quantize") == (m.quantization is not None),
        ),
        Rule(
            "self.type != 'quantize' || !has(self.checkpointEverySteps)",
            "method quantize trains nothing: remove checkpointEverySteps",
            lambda m: m.type != "quantize" or m.checkpoint_every_steps is None,
        ),
        Rule(
            "(self.type == 'distill') == has(self.distillation)",
            "method distill needs distillation settings, and distillation applies to method distill only",
            lambda m: (m.type == "distill") == (m.distillation is not None),
        ),
    )

    type: MethodType = Field(
        description=(
            "pretrain from scratch, full fine-tuning, lora adapters, qlora (lora on a 4-bit base),"
            " quantize (compress spec.model.base; no training), or distill (train spec.model to match a"
            " teacher)."
        )
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="Optimisation; not used by method quantize."
    )
    lora: LoRA | None = Field(None, description="Adapter settings for lora and qlora; defaults when omitted.")
    quantization: Quantization | None = Field(None, description="Method quantize: scheme and algorithm.")
    distillation: Distillation | None = Field(None, description="Method distill: teacher and loss mix.")
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="Save a resumable checkpoint this often; omit to checkpoint once per epoch."
    )


class TrainingResources(ApiModel):
    """The Ray cluster that runs the job."""

    workers: int = Field(1, ge=1, le=1024, description="Ray Train workers, one pod each.")
    per_worker: Resources = Field(default_factory=Resources, description="Compute for each worker pod.")
    head: Resources = Field(default_factory=Resources, description="Compute for the Ray head pod.")


class EvalDataset(ApiModel):
    """A dataset of prompts and references to score the trained model on."""

    name: DnsLabel = Field(description="Dataset name; results are reported as <name>/<metric>.")
    uri: DataUri = Field(description="s3://bucket/key or an absolute path.")
    format: Literal["jsonl", "parquet", "chat"] = Field(
        "jsonl",
        description=(
            "File format. chat: JSON lines whose messagesField holds a conversation; the prompt is the"
            " messages before the last assistant turn, rendered with the model's chat template and its"
            " generation prompt, and the reference is that turn's content."
        ),
    )
    prompt_field: FieldName = Field("prompt", description="Field that holds the prompt (jsonl, parquet).")
    reference_field: FieldName = Field(
        "reference", description="Field that holds the expected answer (jsonl, parquet)."
    )
    # None rather than a default value: a run encoded before this field existed keeps its bytes.
    messages_field: FieldName | None = Field(
        None, description='Field that holds the conversation, for format chat; "messages" when omitted.'
    )
    metrics: list[EvalMetric] = Field(
        min_length=1,
        max_length=6,
        description="Metrics to compute.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    max_samples: int | None = Field(None, ge=1, description="Score at most this many examples.")
    max_new_tokens: int = Field(64, ge=1, le=32768, description="Generation budget per prompt.")


class Perplexity(ApiModel):
    """Perplexity on the validation split."""

    enabled: bool = Field(True, description="Compute perplexity.")
    threshold: float | None = Field(None, gt=0, description="Gate: perplexity must be at most this.")


class BiasSuite(ApiModel):
    """Compare the model's behaviour across demographic groups."""

    enabled: bool = Field(True, description="Run the bias suite.")
    max_gap: Fraction = Field(0.1, description="Gate: largest allowed score difference between groups.")


class SecuritySuite(ApiModel):
    """Probe the model for memorised secrets and unsafe behaviour."""

    enabled: bool = Field(True, description="Run the security suite.")
    canaries: int = Field(
        8,
        ge=0,
        le=1000,
        description=(
            "Random canary strings planted in the training data and probed for; method quantize trains"
            " nothing and plants none."
        ),
    )
    max_leakage: Fraction = Field(0.0, description="Gate: largest allowed fraction of canaries reproduced.")
    probes: list[SecurityProbe] = Field(
        ["promptInjection", "piiExtraction"],
        max_length=4,
        description="Adversarial probe families to run.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class Gate(ApiModel):
    """A condition a metric must meet before the model version may be promoted.

    `compare` picks what is compared against `threshold`: the metric itself (value), or the metric
    relative to the baseline scored in the same run (spec.evaluation.baseline, by default the parent of
    a quantize run or the teacher of a distill run): ratio = value / baseline, difference = value -
    baseline. "Perplexity at most 3% worse than the parent" is {metric: perplexity, compare: ratio,
    operator: "<=", threshold: 1.03}; "exact match at most one point lower" is {metric: qa/exact_match,
    compare: difference, operator: ">=", threshold: -0.01} (task metrics are fractions in [0, 1]).
    """

    metric: MetricName = Field(
        description="Metric key: <dataset>/<metric>, perplexity, bias/gap or security/leakage."
    )
    # None rather than a default value: a run encoded before this field existed keeps its bytes.
    compare: GateCompare | None = Field(
        None,
        description=(
            "value (when omitted) compares the metric; ratio compares metric / baseline's metric;"
            " difference compares metric - baseline's metric (the baseline scored in the same run; a"
            " relative gate without a baseline value fails)."
        ),
    )
    operator: GateOperator = Field(description="Comparison of the measured value against threshold.")
    threshold: float = Field(description="Value to compare against.")


class Evaluation(ApiModel):
    """What to measure after training and which results gate the new version."""

    datasets: list[EvalDataset] = Field(
        default_factory=list,
        max_length=16,
        description="Task datasets.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    perplexity: Perplexity = Field(default_factory=Perplexity, description="Validation perplexity.")
    bias: BiasSuite | None = Field(None, description="Bias suite; omit to skip it.")
    security: SecuritySuite | None = Field(None, description="Security suite; omit to skip it.")
    gates: list[Gate] = Field(default_factory=list, max_length=32, description="Gates; all must pass.")
    baseline: ModelReference | None = Field(
        None,
        description=(
            "A registered version to score beside the trained model: the same datasets, perplexity data,"
            " suites and settings, in the same run, so the two are compared fairly (a RetrainPolicy sets"
            " it to the version serving now). An alias is pinned to its version when the run starts."
            " Results in status.baseline; gates apply to the trained model only, and gates with compare"
            " ratio or difference measure it against these results. When omitted: the parent"
            " (spec.model.base) for method quantize, the teacher for method distill, else none."
        ),
    )


class Output(ApiModel):
    """Where the trained model is registered."""

    registry: ObjectStorageLocation = Field(description="The model registry.")
    model_name: DnsLabel = Field(description="Registered model name; each run adds a new version.")
    work_data_retention_days: RetentionDays | None = retention_days_field(
        "the finished run's data in its work folder (ingested and prepared datasets, evaluation files;"
        " report.json and stages/ stay)"
    )
    checkpoint_retention_days: RetentionDays | None = retention_days_field(
        "the finished run's checkpoints (train/ in its work folder; the registered version is not touched)"
    )


class Runtime(ApiModel):
    """Where and how the Ray job runs."""

    cel_rules = (
        Rule(
            "(self.type == 'rayJobsAPI') == has(self.address)",
            "address is required for type rayJobsAPI and not allowed for kuberay",
            lambda m: (m.type == "rayJobsAPI") == (m.address is not None),
        ),
        Rule(
            "self.type != 'rayJobsAPI' || !has(self.envFromSecrets) || size(self.envFromSecrets) == 0",
            "envFromSecrets applies to type kuberay only: a shared Ray cluster (rayJobsAPI) brings its own"
            " environment and storage access, and the operator never sends Secret values to it",
            lambda m: m.type != "rayJobsAPI" or not m.env_from_secrets,
        ),
    )

    type: Literal["kuberay", "rayJobsAPI"] = Field(
        "kuberay",
        description="kuberay creates a RayJob and its cluster; rayJobsAPI submits to an existing cluster.",
    )
    address: Url | None = Field(
        None, description="Ray dashboard URL for rayJobsAPI, e.g. http://raycluster-head-svc:8265."
    )
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = Field(
        None,
        description=(
            "Image of the Ray pods (runtime kuberay); defaults to the operator's LLMOPS_TRAINER_IMAGE"
            " (LLMOPS_OPTIMIZER_IMAGE for method quantize: it must hold llm-compressor), else the release's."
        ),
    )
    service_account_name: DnsSubdomain | None = Field(None, description="ServiceAccount of the Ray pods.")
    queue_name: DnsLabel | None = Field(None, description="Kueue LocalQueue to admit the job through.")
    active_deadline_seconds: int | None = Field(None, ge=1, description="Fail the job after this long.")
    backoff_limit: int = Field(0, ge=0, le=100, description="Retries of a failed run before the job fails.")
    env_from_secrets: list[DnsSubdomain] = Field(
        default_factory=list,
        max_length=16,
        description="Secrets whose keys become environment variables of every Ray pod (runtime kuberay"
        " only: a rayJobsAPI cluster brings its own environment).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


def _local_paths(spec: TrainingJobSpec) -> list[str]:
    """Every location of `spec` that is a path on a local filesystem rather than object storage."""
    paths = [s.uri for s in spec.data.sources if s.uri] + [
        d.uri for d in (spec.evaluation.datasets if spec.evaluation else [])
    ]
    paths += [
        s.served_traffic.location.local.path
        for s in spec.data.sources
        if s.served_traffic and s.served_traffic.location.local
    ]
    if spec.model.base_model:
        paths.append(spec.model.base_model)
    local = [p for p in paths if p.startswith("/")]
    if spec.output.registry.local:
        local.append(spec.output.registry.local.path)
    return local


class TrainingJobSpec(ApiModel):
    """Pre-train, fine-tune, quantize or distil a model on Ray, evaluate it against gates (absolute, or
    relative to a baseline), and register the result as a new model version."""

    cel_rules = (
        Rule(
            "self.method.type in ['pretrain', 'distill', 'quantize'] || has(self.model.base)"
            " || has(self.model.baseModel)",
            "methods full, lora and qlora fine-tune an existing model: set model.base or model.baseModel",
            lambda m: (
                m.method.type in ("pretrain", "distill", "quantize")
                or m.model.base is not None
                or m.model.base_model is not None
            ),
            field_path=".model",
        ),
        Rule(
            "self.method.type != 'quantize' || !has(self.resources) || !has(self.resources.workers)"
            " || self.resources.workers == 1",
            "method quantize runs on one worker (llm-compressor quantizes in one process, on one GPU or the"
            " CPUs): set resources.workers to 1",
            lambda m: m.method.type != "quantize" or m.resources.workers == 1,
            field_path=".resources",
        ),
        Rule(
            "self.method.type != 'quantize' || !has(self.data.preparation)"
            " || !has(self.data.preparation.augmentation) || size(self.data.preparation.augmentation) == 0",
            "method quantize trains nothing: augmentation would only alter its calibration data; remove it",
            lambda m: m.method.type != "quantize" or not m.data.preparation.augmentation,
            field_path=".data.preparation.augmentation",
        ),
        Rule(
            "self.method.type != 'quantize' || !has(self.evaluation) || !has(self.evaluation.gates)"
            " || self.evaluation.gates.all(g, g.metric != 'security/leakage')",
            "method quantize trains nothing, so it plants no canary: a gate on security/leakage would"
            " measure nothing; remove it (the security probes still run)",
            lambda m: (
                m.method.type != "quantize"
                or m.evaluation is None
                or all(g.metric != "security/leakage" for g in m.evaluation.gates)
            ),
            field_path=".evaluation.gates",
        ),
        Rule(
            "self.method.type != 'quantize' || has(self.model.base)",
            "method quantize compresses a registered version: set model.base (the parent the new"
            " version is gated against and recorded with)",
            lambda m: m.method.type != "quantize" or m.model.base is not None,
            field_path=".model",
        ),
        Rule(
            "!has(self.evaluation) || !has(self.evaluation.gates)"
            " || self.evaluation.gates.all(g, !has(g.compare) || g.compare == 'value')"
            " || has(self.evaluation.baseline) || self.method.type in ['quantize', 'distill']",
            "gates with compare ratio or difference need a baseline: set evaluation.baseline (methods"
            " quantize and distill default it to the parent or the teacher)",
            lambda m: (
                m.evaluation is None
                or all(g.compare in (None, "value") for g in m.evaluation.gates)
                or m.evaluation.baseline is not None
                or m.method.type in ("quantize", "distill")
            ),
            field_path=".evaluation.gates",
        ),
        # The kuberay runtime's pods mount no volume: a local path would be a different, empty
        # folder in every pod. rayJobsAPI may use one when the shared cluster has that filesystem.
        Rule(
            "(has(self.runtime) && has(self.runtime.type) && self.runtime.type == 'rayJobsAPI')"
            " || (!has(self.output.registry.local)"
            " && self.data.sources.all(s, (!has(s.uri) || !s.uri.startsWith('/'))"
            " && (!has(s.servedTraffic) || !has(s.servedTraffic.location.local)))"
            " && (!has(self.model.baseModel) || !self.model.baseModel.startsWith('/'))"
            " && (!has(self.evaluation) || !has(self.evaluation.datasets)"
            " || self.evaluation.datasets.all(d, !d.uri.startsWith('/'))))",
            "runtime kuberay cannot use local paths (output.registry.local, data.sources[].uri,"
            " data.sources[].servedTraffic.location.local,"
            " model.baseModel, evaluation.datasets[].uri): its Ray pods mount no volume, so each would"
            " see its own empty folder; use s3:// locations, or runtime rayJobsAPI on a cluster that"
            " shares the filesystem",
            lambda m: m.runtime.type == "rayJobsAPI" or not _local_paths(m),
            field_path=".runtime",
        ),
    )

    model: TrainingModel = Field(description="What training starts from.")
    data: Data = Field(description="Training data.")
    method: Method = Field(description="Training method and hyper-parameters.")
    resources: TrainingResources = Field(default_factory=TrainingResources, description="Ray cluster size.")
    evaluation: Evaluation | None = Field(None, description="Evaluation and gates; omit to skip evaluation.")
    output: Output = Field(description="Where the new model version is registered.")
    runtime: Runtime = Field(default_factory=Runtime, description="Where the job runs.")
    suspend: bool = Field(False, description="Stop running pods and keep the job; set false to resume.")
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        description=(
            "Keep the Ray cluster this long after the job succeeds or fails (for logs), then delete it; "
            "omit to delete it at once. The TrainingJob and its status stay."
        ),
    )

    def baseline_reference(self) -> ModelReference | None:
        """The version scored beside the new one: evaluation.baseline, else the parent of a quantize
        run (model.base) or the teacher of a distill run; None without evaluation or such a version."""
        if self.evaluation is None:
            return None  # nothing is evaluated, so nothing is scored beside it
        return self.evaluation.baseline or self.parent_reference()

    def planted_canaries(self) -> int:
        """How many canaries data preparation plants in the training split: evaluation.security.canaries
        when the security suite is on and the method trains on that split; 0 for method quantize, which
        trains nothing, so a canary could not measure memorisation (its leakage gate would pass on data
        that is not there)."""
        security = self.evaluation.security if self.evaluation else None
        if security is None or not security.enabled or self.method.type == "quantize":
            return 0
        return security.canaries

    def parent_reference(self) -> ModelReference | None:
        """The registered version the new one derives from, as its manifest records it (lineage.parent):
        model.base for quantize, the teacher for distill; None for the other methods, whose starting
        point is lineage.baseModel."""
        if self.method.type == "quantize":
            return self.model.base
        if self.method.type == "distill" and self.method.distillation is not None:
            return self.method.distillation.teacher
        return None


class Progress(ApiModel):
    """How far training has come."""

    stage: Stage | None = Field(None, description="Current stage.")
    step: int | None = Field(None, ge=0, description="Optimiser steps done.")
    total_steps: int | None = Field(None, ge=0, description="Optimiser steps planned.")
    percent: int | None = Field(None, ge=0, le=100, description="step / totalSteps, in percent.")
    epoch: float | None = Field(None, ge=0, description="Epochs done, fractional.")
    loss: float | None = Field(None, description="Latest training loss.")
    tokens_per_second: float | None = Field(None, ge=0, description="Training throughput over all workers.")
    eta_seconds: int | None = Field(None, ge=0, description="Estimated seconds until training ends.")


class GateResult(ApiModel):
    """The verdict of one gate."""

    metric: MetricName = Field(description="Metric key.")
    # None rather than "value": a verdict recorded before relative gates existed keeps its bytes.
    compare: GateCompare | None = Field(
        None, description="ratio or difference for a gate relative to the baseline; absent: the value."
    )
    operator: GateOperator = Field(description="Comparison.")
    threshold: float = Field(description="Value compared against.")
    value: float | None = Field(None, description="Measured value; absent when the metric was not produced.")
    baseline_value: float | None = Field(
        None, description="The baseline's value of the metric in the same run (relative gates)."
    )
    compared: float | None = Field(
        None,
        description="What was compared with threshold for a relative gate: value / baselineValue or"
        " value - baselineValue; absent when either is missing.",
    )
    passed: bool = Field(description="Whether the gate passed; a missing value fails.")

    def describe(self) -> str:
        """The verdict for people, saying by how much a relative gate missed: "perplexity = 12.5
        against the baseline's 12, +0.5 (+4.2%); ratio 1.042, needs <= 1.03"."""
        if self.value is None:
            return f"{self.metric} was not produced"
        if self.compare in (None, "value"):
            return f"{self.metric} = {self.value:.4g}, needs {self.operator} {self.threshold:g}"
        if self.baseline_value is None:
            return f"{self.metric} = {self.value:.4g}, but the baseline has no value to compare with"
        if self.compared is None:
            base = f"{self.baseline_value:.4g}"
            return f"{self.metric} = {self.value:.4g}: a ratio over the baseline's {base} is undefined"
        change = self.value - self.baseline_value
        relative = f" ({change / abs(self.baseline_value):+.1%})" if self.baseline_value else ""
        return (
            f"{self.metric} = {self.value:.4g} against the baseline's {self.baseline_value:.4g},"
            f" {change:+.4g}{relative}; {self.compare} {self.compared:.4g}, needs {self.operator}"
            f" {self.threshold:g}"
        )


class ModelVersionRef(ApiModel):
    """A registered model version."""

    name: DnsLabel = Field(description="Registered model name.")
    version: Annotated[str, StringConstraints(min_length=1, max_length=63)] = Field(description="Version.")
    uri: Annotated[str, StringConstraints(max_length=2048)] = Field(description="Location of its manifest.")


class Lineage(ApiModel):
    """Where the produced version came from; the full record is in its registry manifest."""

    base: ShortText | None = Field(None, description="Starting point: name:version, a URI, or scratch.")
    data_digest: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        None, description="sha256 digest of the prepared dataset manifest."
    )
    image: Annotated[str, StringConstraints(max_length=512)] | None = Field(
        None, description="Trainer image."
    )


class BaselineResult(ApiModel):
    """The baseline's scores (spec.evaluation.baseline), measured in the same run as status.evaluation."""

    name: DnsLabel = Field(description="Registered model name of the baseline.")
    version: Annotated[str, StringConstraints(min_length=1, max_length=63)] = Field(
        description="The version scored (an alias pinned when the run started)."
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        max_length=128,
        description="Evaluation results by metric key, the same keys as status.evaluation.",
    )


class TrainingJobStatus(Status):
    """Observed state of a TrainingJob."""

    phase: Phase | None = Field(None, description="Pending, Running, Succeeded, Failed or Suspended.")
    progress: Progress | None = Field(None, description="Training progress.")
    evaluation: dict[str, float] = Field(
        default_factory=dict, max_length=128, description="Evaluation results by metric key."
    )
    gates: list[GateResult] = Field(default_factory=list, max_length=32, description="Gate verdicts.")
    baseline: BaselineResult | None = Field(
        None,
        description="spec.evaluation.baseline's results from the same run; written when evaluation is done.",
    )
    model_version: ModelVersionRef | None = Field(None, description="The model version this job registered.")
    lineage: Lineage | None = Field(None, description="Lineage summary of the produced version.")
    ray_job_name: DnsSubdomain | None = Field(None, description="Name of the RayJob (runtime kuberay).")
    submission_id: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        None, description="Ray job submission id."
    )
    work_dir: Annotated[str, StringConstraints(max_length=2048)] | None = Field(
        None,
        description="The run's work folder (checkpoints, data, reports); artifacts stay if a gate fails.",
    )
    start_time: datetime | None = Field(None, description="When the job started running.")
    completion_time: datetime | None = Field(None, description="When the job succeeded or failed.")
    retention: list[StoreRetention] = Field(
        default_factory=list,
        max_length=2,
        description="Retention of the finished run's work folder: one entry per store swept.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["store"]},
    )


class Reason(CommonReason):
    """The reasons of a TrainingJob's conditions (`status.conditions[].reason`), declared once.

    The operator (llmops/operators/trainingjob) sets them; docs/operations.md lists them all. A run
    that Ray or KubeRay failed keeps the runtime's own reason when it is a CamelCase word
    (`DeadlineExceeded`, `ValidationFailed`, `SubmissionFailed`, `AppFailed`), else RAY_JOB_FAILED.
    """

    # Pending, Running or Suspended, Reconciling=True: the run is on its way.
    CREATED = "Created"  # the RayJob exists, KubeRay has not started it
    STARTING = "Starting"  # the Ray cluster or the Ray job is starting
    QUEUED = "Queued"  # waiting for Kueue to admit the RayJob
    RESUMING = "Resuming"
    TRAINING = "Training"  # Running: the workload reports progress
    SUSPENDED = "Suspended"  # spec.suspend is true
    # Succeeded, Ready=True.
    SUCCEEDED = "Succeeded"
    # Failed, Stalled=True: the run ended without registering a version (kept; re-create to rerun).
    GATES_FAILED = "GatesFailed"
    TRAINING_FAILED = "TrainingFailed"
    NO_FINAL_REPORT = "NoFinalReport"
    STOPPED = "Stopped"  # stopped outside llmops
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    RAY_JOB_FAILED = "RayJobFailed"
    # Failed, Stalled=True, before anything runs: the spec cannot run as written.
    GPU_REQUIRED = "GpuRequired"
    # Pending, Stalled=True, retried every minute: something outside the spec is missing.
    # CREDENTIALS_NOT_FOUND (CommonReason)
    BASE_MODEL_NOT_FOUND = "BaseModelNotFound"
    BASELINE_NOT_FOUND = "BaselineNotFound"  # spec.evaluation.baseline does not resolve
    TEACHER_NOT_FOUND = "TeacherNotFound"  # spec.method.distillation.teacher does not resolve
    # method quantize: spec.model.base names a version already quantized, or an adapter only
    BASE_NOT_QUANTIZABLE = "BaseNotQuantizable"
    # Reconciling=True, retried: what the operator reads does not answer.
    # REGISTRY_UNAVAILABLE (CommonReason)
    RAY_UNAVAILABLE = "RayUnavailable"
    REPORT_UNAVAILABLE = "ReportUnavailable"


class EventReason:
    """The reasons of the Events a TrainingJob's operator posts besides its condition reasons.

    A Warning with the condition's reason goes out when the job stalls for a new reason; a run that
    ended Failed says FAILED, or GATE_FAILED when its gates failed.
    """

    STARTED = "Started"
    SUCCEEDED = "Succeeded"
    SUSPENDED = "Suspended"
    FAILED = "Failed"
    GATE_FAILED = "GateFailed"
    CLEANUP_FAILED = "CleanupFailed"  # the Ray job on a cluster we do not own could not be stopped
