"""Where the model comes from, and how each method builds it.

A base model is a Hugging Face checkpoint folder found in one of three places: a version in the
llmops registry (`model.base`), a folder in S3 or on a mounted path (`model.baseModel`), or the
Hub (`hf://org/name`). The driver resolves it once (and fails fast when it is not there); workers
fetch it themselves from the same place, so nothing assumes a filesystem shared between nodes.

Methods: pretrain (a LlamaConfig from `model.architecture`, random init), full (every weight),
lora (peft adapters on `lora.targetModules`), qlora (lora on a 4-bit NF4 base via bitsandbytes;
GPUs only), distill (every weight of a student, from `model.base`/`baseModel` or a new
`model.architecture`, trained against the logits of `method.distillation.teacher`, a registered
version loaded frozen beside it; the two must share one tokenizer, `check_teacher`). The registered
LoRA model is the adapter merged into the base (plain weights any server loads), with the adapter
itself beside it under `adapter/` for servers that stack adapters.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.api.common import ObjectStorageLocation
from llmops.storage import download_dir
from llmops.training.context import Context, StoreSpec, log, s3_location
from llmops.training.errors import UserError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


@dataclass(frozen=True)
class ModelSource:
    """A checkpoint folder: in a store under `prefix`, or a Hub repo."""

    description: str
    store: StoreSpec | None = None
    prefix: str = ""
    hf_repo: str | None = None

    def fetch(self, dest: Path, names: tuple[str, ...] | None = None) -> Path:
        """Copy the checkpoint (or only `names`) into dest; returns the folder to load from.

        Several workers on one node share dest: a file lock lets one download while the others wait.
        """
        if self.hf_repo:
            from huggingface_hub import snapshot_download

            patterns = list(names) if names else None
            return Path(
                snapshot_download(self.hf_repo, allow_patterns=patterns, token=os.environ.get("HF_TOKEN"))
            )
        assert self.store is not None
        import fcntl

        dest.mkdir(parents=True, exist_ok=True)
        with open(dest.parent / f".{dest.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            marker = dest / ".complete"
            if names is None and marker.exists():
                return dest
            store = self.store.open()
            prefix = self.prefix.strip("/")
            if names is None:
                download_dir(store, prefix, dest)
                marker.touch()
            else:
                for name in names:
                    key = f"{prefix}/{name}" if prefix else name
                    if store.exists(key):
                        store.download_file(key, dest / name)
        return dest


def resolve_base(ctx: Context) -> ModelSource | None:
    """The base checkpoint of a fine-tune (None for pretrain); UserError when it does not exist."""
    model = ctx.spec.model
    if model.architecture is not None:
        if ctx.spec.method.type not in ("pretrain", "distill"):
            raise UserError(
                f"spec.method.type is {ctx.spec.method.type} but spec.model sets architecture: "
                "fine-tuning needs model.base or model.baseModel; "
                "use method.type pretrain to train from scratch (or distill to train it from a teacher)"
            )
        return None
    if model.base is not None:
        from llmops import registry

        ref = model.base
        try:
            version = registry.resolve(ctx.registry.open(), ref)
        except registry.RegistryError as e:
            raise UserError(
                f"spec.model.base: {e}; register the base model first, or fix model.base name/version/alias"
            ) from e
        return ModelSource(
            f"{ref.name}:{version.version}",
            ctx.registry,
            f"{registry.version_prefix(ref.name, version.version)}/model",
        )
    assert model.base_model is not None
    return resolve_uri(ctx, model.base_model, "spec.model.baseModel", require="config.json")


def registered_model(ctx: Context, ref: Any, field: str, what: str) -> ModelSource:
    """The checkpoint folder of a registered version that must be a whole model (a baseline, a teacher).

    `field` names the spec field for errors; `what` says what the model is for. UserError when `ref`
    does not resolve, is a bare LoRA adapter (`content.kind: adapter`: no weights of its own; a lora
    TrainingJob's version holds its merged model, which loads), or holds no config.json.
    """
    from llmops import registry

    try:
        version = registry.resolve(ctx.registry.open(), ref)
    except registry.RegistryError as e:
        raise UserError(f"{field}: {e}; name a registered version (or an alias that points at one)") from e
    description = f"{ref.name}:{version.version}"
    if version.described.kind == "adapter":
        raise UserError(
            f"{field} {description} is a bare LoRA adapter (for {version.described.base}),"
            f" not a model: llmops {what}; name a version that holds one"
        )
    if "config.json" not in version.artifacts:
        raise UserError(
            f"{field} {description} has no config.json: it is not a Hugging Face"
            " checkpoint; name a version that holds a model"
        )
    return ModelSource(
        description, ctx.registry, f"{registry.version_prefix(ref.name, version.version)}/model"
    )


def resolve_teacher(ctx: Context) -> ModelSource | None:
    """The teacher of a distill run (`spec.method.distillation.teacher`), None for other methods;
    UserError naming the field when it does not resolve or is not a whole model."""
    distillation = ctx.spec.method.distillation
    if ctx.spec.method.type != "distill" or distillation is None:
        return None
    return registered_model(
        ctx, distillation.teacher, "spec.method.distillation.teacher", "distils from a whole model"
    )


def resolve_baseline(ctx: Context) -> ModelSource | None:
    """The checkpoint of the baseline (`spec.baseline_reference()`; None without one), from the registry.

    The operator pinned it to a version when the run started. Raises UserError, naming the field,
    when it does not resolve or is a bare adapter (`content.kind: adapter`): such a version has no
    weights of its own, and the baseline must be loadable exactly as it is served, so name the
    version that holds the full model (a lora TrainingJob registers its adapter merged: that loads).
    """
    spec = ctx.spec
    ref = spec.baseline_reference()
    if ref is None:
        return None
    field = "spec.evaluation.baseline"
    if spec.evaluation is not None and spec.evaluation.baseline is None:  # the parent or the teacher
        field = "spec.model.base" if spec.method.type == "quantize" else "spec.method.distillation.teacher"
    return registered_model(ctx, ref, field, "scores a baseline as a whole model")


def resolve_uri(ctx: Context, uri: str, what: str, require: str = "tokenizer_config.json") -> ModelSource:
    """A checkpoint folder at s3://, /path or hf://; UserError unless `require` is in it."""
    if uri.startswith("hf://"):
        repo = uri.removeprefix("hf://").strip("/")
        try:
            from huggingface_hub import hf_hub_download

            hf_hub_download(repo, require, token=os.environ.get("HF_TOKEN"))
        except Exception as e:
            raise UserError(
                f"{what} {uri}: cannot fetch its {require} from the Hugging Face Hub "
                f"({type(e).__name__}); check the repo name, HF_TOKEN for gated models, and network access"
            ) from e
        return ModelSource(uri, hf_repo=repo)
    if uri.startswith("s3://"):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        store = StoreSpec(s3_location(f"s3://{bucket}", ctx.data_connection), ctx.data_credentials)
        source = ModelSource(uri, store, key.strip("/"))
    else:
        loc = ObjectStorageLocation.model_validate({"local": {"path": uri.rstrip("/") or "/"}})
        source = ModelSource(uri, StoreSpec(loc), "")
    assert source.store is not None
    try:
        found = source.store.open().exists(f"{source.prefix}/{require}" if source.prefix else require)
    except Exception as e:
        raise UserError(
            f"{what} {uri}: cannot read it ({type(e).__name__}: {e}); check the URI and credentials"
        ) from e
    if not found:
        raise UserError(
            f"{what} {uri}: no {require} there, so it is not a Hugging Face checkpoint folder; "
            f"point it at the folder that holds {require}"
            + (", the weights and the tokenizer" if require == "config.json" else "")
        )
    return source


def check_base(
    base: ModelSource, method: str, lora: Any, block_size: int, dest: Path, role: str = "the base model"
) -> Any:
    """Before any data moves: the base is a causal LM (built on the meta device from its config.json),
    the blocks fit its context, and lora.targetModules name layers it has. Returns its config.

    `role` names the model in errors (the teacher of a distill run is checked the same way)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmops.api.trainingjob import LoRA

    folder = base.fetch(dest, ("config.json",))
    try:
        config = AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except Exception as e:
        raise UserError(
            f"{role} {base.description} has a config.json transformers cannot load as a causal LM "
            f"({type(e).__name__}: {e}); use a decoder-only checkpoint"
        ) from e
    context = getattr(config, "max_position_embeddings", None)
    if context and block_size > context:
        raise UserError(
            f"spec.data.preparation.tokenization.blockSize is {block_size} but {base.description} "
            f"handles at most {context} positions; lower blockSize to {context} or less"
        )
    if method not in ("lora", "qlora"):
        return config
    targets = list((lora or LoRA()).target_modules)
    names = {n.rsplit(".", 1)[-1] for n, _ in skeleton.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)}
        )
        raise UserError(
            f"spec.method.lora.targetModules {missing} are not layers of {base.description}; "
            f"its linear layers are {linear}"
        )
    return config


def same_vocabulary(a: Any, b: Any) -> bool:
    """Whether two tokenizers map every token to the same id and agree on BOS and EOS: then their ids,
    and so the logits of models trained with them, mean the same."""
    return (
        a.get_vocab() == b.get_vocab()
        and a.bos_token_id == b.bos_token_id
        and a.eos_token_id == b.eos_token_id
    )


def _vocabulary_difference(student: Any, teacher: Any) -> str:
    s, t = student.get_vocab(), teacher.get_vocab()
    differ = sum(1 for token, i in t.items() if s.get(token) != i) + sum(1 for token in s if token not in t)
    return (
        f"{len(s)} tokens against the teacher's {len(t)}, {differ} of them with another id or missing,"
        f" BOS/EOS ids {student.bos_token_id}/{student.eos_token_id} against"
        f" {teacher.bos_token_id}/{teacher.eos_token_id}"
    )


def check_teacher(ctx: Context, teacher: ModelSource, student: ModelSource | None, dest: Path) -> None:
    """Before any data moves, for method distill: the teacher (spec.method.distillation.teacher) is a
    causal LM whose context holds the blocks, and the student shares its tokenizer, id for id.

    The distillation loss compares the two next-token distributions id by id, so a student with another
    vocabulary would learn noise. The student's tokenizer is its base's (`student`: model.base or
    baseModel resolved), else `model.architecture.tokenizer`; an architecture student without one reuses
    the teacher's (prepare does that), and its vocabSize must hold it. Every id of the shared tokenizer
    must be a logit of both models (their embedding matrices may be padded past it). Raises UserError
    naming spec.method.distillation.teacher (or the student's field) otherwise.
    """
    from transformers import AutoConfig

    field = f"spec.method.distillation.teacher {teacher.description}"
    block_size = ctx.spec.data.preparation.tokenization.block_size
    config = check_base(teacher, "distill", None, block_size, dest / "teacher-config", role=field)
    teacher_tok = _tokenizer_of(teacher, dest / "teacher-tokenizer", field)
    arch = ctx.spec.model.architecture
    size = len(teacher_tok)
    if student is not None:
        student_tok = _tokenizer_of(student, dest / "student-tokenizer", f"the student {student.description}")
        origin = f"the student {student.description}"
        student_vocab = getattr(
            AutoConfig.from_pretrained(
                student.fetch(dest / "student-config", ("config.json",))
            ).get_text_config(),
            "vocab_size",
            None,
        )
    elif arch is not None and arch.tokenizer:
        source = resolve_uri(ctx, arch.tokenizer, "spec.model.architecture.tokenizer")
        origin = f"the student's spec.model.architecture.tokenizer {arch.tokenizer}"
        student_tok = _tokenizer_of(source, dest / "student-tokenizer", origin)
        student_vocab = arch.vocab_size
    else:
        assert arch is not None
        if arch.vocab_size < size:
            raise UserError(
                f"spec.model.architecture.vocabSize is {arch.vocab_size} but the student reuses the tokenizer"
                f" of {field}, which has {size} tokens; raise vocabSize to at least {size}"
            )
        return
    if not same_vocabulary(student_tok, teacher_tok):
        difference = _vocabulary_difference(student_tok, teacher_tok)
        raise UserError(
            f"{field} and {origin} do not share a tokenizer ({difference}):"
            " distillation compares their next-token distributions id by id; choose a student with the"
            " teacher's tokenizer, or a spec.model.architecture student without architecture.tokenizer"
            " (it reuses the teacher's)"
        )
    teacher_vocab = getattr(config.get_text_config(), "vocab_size", None)
    for who, vocab in ((field, teacher_vocab), (origin, student_vocab)):
        if vocab is not None and vocab < size:
            raise UserError(
                f"{who} has {vocab} logits but its tokenizer has {size} tokens; "
                "distillation needs a logit for every token id"
            )


def _tokenizer_of(source: ModelSource, dest: Path, what: str) -> Any:
    try:
        return load_tokenizer(source.fetch(dest, TOKENIZER_FILES))
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"the tokenizer of {what} does not load ({type(e).__name__}: {e}); it needs tokenizer.json"
        ) from e


def load_teacher(folder: Path, device) -> Any:
    """The distillation teacher from its checkpoint folder, on `device`: float32 weights as the student's
    (the run's autocast applies its mixed precision to both alike), eval mode (no dropout), frozen."""
    import torch
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def check_architecture(arch: Any, block_size: int) -> None:
    if block_size > arch.max_position_embeddings:
        raise UserError(
            f"spec.data.preparation.tokenization.blockSize is {block_size} but "
            f"spec.model.architecture.maxPositionEmbeddings is {arch.max_position_embeddings}; "
            "lower blockSize or raise maxPositionEmbeddings"
        )


def train_tokenizer(texts, vocab_size: int, out: Path):
    """A byte-level BPE tokenizer trained on `texts`, saved in Hugging Face layout under out/."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
    fast.save_pretrained(out)
    return fast


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.eos_token is None:
        raise UserError(
            f"the tokenizer at {path} has no end-of-sequence token; packing needs one to separate documents"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def llama_config(arch: dict[str, Any], tokenizer, dropout: float):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=arch["vocab_size"],
        hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"],
        num_hidden_layers=arch["layers"],
        num_attention_heads=arch["heads"],
        num_key_value_heads=arch.get("kv_heads") or arch["heads"],
        max_position_embeddings=arch["max_position_embeddings"],
        attention_dropout=dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def set_dropout(config, p: float) -> None:
    """Apply spec dropout to whichever dropout fields the architecture has (Llama: attention only)."""
    for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout"):
        if hasattr(config, name):
            setattr(config, name, p)


def check_qlora_possible(method: str, gpus_per_worker: int, cluster_gpus: float) -> None:
    """QLoRA quantises the base to 4 bits with bitsandbytes' CUDA kernels: refuse it up front on CPUs
    and where bitsandbytes is not installed (UserError naming the field and the fix)."""
    if method != "qlora":
        return
    if gpus_per_worker < 1:
        raise UserError(
            "spec.method.type is qlora, which needs GPUs (bitsandbytes 4-bit kernels), but "
            "spec.resources.perWorker.gpus is 0; set perWorker.gpus to 1 or more on a GPU cluster, "
            "or use method.type lora to train adapters on CPUs"
        )
    if cluster_gpus < 1:
        raise UserError(
            "spec.method.type is qlora, which needs GPUs, but the Ray cluster has none; run it on a "
            "cluster with GPU workers, or use method.type lora on CPUs"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise UserError(
            "spec.method.type is qlora but the trainer image has no bitsandbytes; use the GPU trainer image"
        ) from e


def build(cfg: dict[str, Any], base_dir: Path | None, tokenizer, device) -> Any:
    """The model to train, on `device`, as each Ray Train worker builds it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

    method, hp = cfg["method"], cfg["hyperparameters"]
    torch.manual_seed(hp["seed"])
    if method == "pretrain" or cfg.get("architecture") is not None:  # or a distill student from one
        config = llama_config(cfg["architecture"], tokenizer, hp["dropout"])
        return LlamaForCausalLM(config).to(device)
    assert base_dir is not None
    config = AutoConfig.from_pretrained(base_dir)
    set_dropout(config, hp["dropout"])
    kwargs: dict[str, Any] = {"config": config}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, **kwargs)
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = model.to(device)
    if method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        lora = cfg["lora"]
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora["r"],
                lora_alpha=lora["alpha"],
                lora_dropout=lora["dropout"],
                target_modules=lora["target_modules"],
                task_type="CAUSAL_LM",
            ),
        )
    return model


def save_final(model, cfg: dict[str, Any], base_dir: Path | None, tokenizer, out: Path) -> dict[str, Any]:
    """The trained model in Hugging Face layout (safetensors): merged for LoRA, with adapter/ beside it."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    method = cfg["method"]
    info: dict[str, Any] = {"format": "safetensors", "merged": False}
    if method in ("lora", "qlora"):
        model.save_pretrained(out / "adapter", safe_serialization=True)
        if method == "qlora":
            # A 4-bit base cannot take the merge: reload it in bf16 and apply the saved adapter.
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16)
            merged = PeftModel.from_pretrained(base, out / "adapter").merge_and_unload()
        else:
            merged = model.merge_and_unload()
        merged.save_pretrained(out, safe_serialization=True)
        info.update(merged=True, adapter="adapter/")
    else:
        model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "llmops-training.json").write_text(json.dumps({"method": method}, indent=2))
    log.info("saved the final model to %s", out)
    return info
