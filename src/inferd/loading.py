"""Loading one model version: its runtime (here, or in worker processes), its executor and its scheduler."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from inferd.artifacts import VersionSource
from inferd.classification import Labels, read_labels
from inferd.codecs.v2_plain import PlainRequestPlan
from inferd.config import CONFIG_FILE, ConfigError, ModelConfig
from inferd.executors.base import Executor
from inferd.executors.threads import ThreadExecutor
from inferd.generation.sampling import SamplingParams
from inferd.generation.scheduler import GenerationLimits, GenerationScheduler
from inferd.runtimes.base import Runtime, StreamingRuntime
from inferd.runtimes.registry import load_engine, load_runtime
from inferd.scheduling.policy import SchedulingPolicy
from inferd.scheduling.scheduler import OutputCheck, Scheduler
from inferd.scheduling.sequences import SequenceBatcher, plan_sequences
from inferd.signature import Signature, check_outputs

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 4096
"""Rows one request may carry to a batched model, unless model.toml or the server settings say otherwise."""


DEFAULT_EXECUTION_TIMEOUT_S = 60.0
"""Longest one model call may run, unless model.toml or the server settings say otherwise."""


@dataclass(frozen=True, slots=True)
class ServerDefaults:
    """What a model gets when its model.toml does not say (from the server settings)."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    dynamic_batching: bool | None = None
    """None: each runtime's own default (on for ONNX; see RuntimeInfo.batches_by_default)."""
    max_queue_delay_us: int = 0
    max_queue_size: int = 1024
    execution_timeout_s: float = DEFAULT_EXECUTION_TIMEOUT_S


@dataclass(slots=True)
class Loaded:
    signature: Signature
    executor: Executor
    scheduler: Scheduler
    runtime: Runtime | None
    """The in-process runtime; None when the model runs in worker processes."""
    plain: PlainRequestPlan | None = None
    """Reads and answers the plain V2 request in one pass (None when the signature has no such form)."""
    labels: Labels = field(default_factory=dict)
    """The class labels of the outputs ``[labels]`` names (for the classification extension)."""
    generator: GenerationScheduler | None = None
    """A generative model's continuous batching (None for a tensor model)."""
    sequences: SequenceBatcher | None = None
    """A stateful model's sequences, in front of its scheduler (``[sequence_batching]``; None for the others)."""
    decoupled: bool = False
    """``[model_transaction_policy] decoupled``: any number of responses per request, streamed (see
    :mod:`inferd.decoupled`); such a model refuses unary calls."""

    def close(self) -> None:
        if self.sequences is not None:
            self.sequences.close()
        self.scheduler.close()
        self.executor.close()
        if self.generator is not None:
            self.generator.close()


def load(name: str, source: VersionSource, model_folder: Path, config: ModelConfig,
         defaults: ServerDefaults) -> Loaded:
    """Raises whatever the runtime raises; the repository turns it into an UNAVAILABLE reason."""
    override = config.signature_override()
    runtime: Runtime | None = None
    executor: Executor
    instances = config.instances
    timeout_s = execution_timeout(config, defaults)
    if source.runtime.generative:
        return load_generative(name, source, model_folder, config, defaults)
    if instances.kind == "process":
        from inferd.executors.process import ProcessExecutor, WorkerLimits

        process = ProcessExecutor.start(name, source.version, source.runtime, source.artifact, model_folder,
                                        config.options, override, instances.count,
                                        WorkerLimits(timeout_s, instances.max_requests, instances.max_rss_mb))
        signature = process.signature
        executor = process
    else:
        runtime = load_runtime(source.runtime, source.artifact, model_folder, config.options, override)
        signature = runtime.signature
        if config.model_transaction_policy.decoupled and not isinstance(runtime, StreamingRuntime):
            runtime.close()
            raise ConfigError(f"{model_folder / CONFIG_FILE}: [model_transaction_policy] decoupled = true needs a "
                              f"runtime that streams responses (python, with a generator predict), not "
                              f"{source.runtime.name}")
        executor = ThreadExecutor(name, runtime, instances.count, timeout_s=timeout_s)
    if config.max_batch_size == 0:  # as Triton: the model has no batch dimension; its first one is its own
        signature = signature.without_batch()
    policy = scheduling_policy(config, signature, defaults, source.runtime.batches_by_default,
                               source.runtime.columns_are_rows)
    if (policy.dynamic_batching and config.batching.enabled is None and defaults.dynamic_batching is None
            and config.sequence_batching is None):
        log.info("model %s version %d: requests that arrive together run as one batch (the %s runtime's "
                 "default); if its first dimension is not a batch of independent rows, set [batching] "
                 "enabled = false in its model.toml", name, source.version, source.runtime.name)
    try:
        labels = output_labels(model_folder, config, signature)
        if config.sequence_batching is not None:
            return load_sequences(name, config, signature, executor, runtime, policy, labels)
    except BaseException:
        executor.close()
        raise
    return Loaded(signature, executor, Scheduler(name, executor, policy, output_check(signature)), runtime,
                  PlainRequestPlan.for_signature(signature, policy.max_batch_size), labels,
                  decoupled=config.model_transaction_policy.decoupled)


def load_sequences(name: str, config: ModelConfig, signature: Signature, executor: Executor,
                   runtime: Runtime | None, policy: SchedulingPolicy, labels: Labels) -> Loaded:
    """A stateful model (``[sequence_batching]``): clients see its signature without the control and state
    tensors; its scheduler batches the requests of different sequences (one row each) as dynamic batching does,
    with the sequence batching's delay and preferred sizes; the model is checked against its whole signature."""
    sequencing = config.sequence_batching
    assert sequencing is not None
    plan = plan_sequences(sequencing, signature, policy.max_batch_size, config.instances.count)
    policy = replace(policy, dynamic_batching=bool(policy.max_batch_size),
                     max_queue_delay_us=sequencing.max_queue_delay_microseconds,
                     preferred_batch_sizes=tuple(sorted(sequencing.preferred_batch_sizes)))
    scheduler = Scheduler(name, executor, policy, output_check(signature))
    return Loaded(plan.signature, executor, scheduler, runtime, None, labels,
                  sequences=SequenceBatcher(name, plan, scheduler))


def output_labels(model_folder: Path, config: ModelConfig, signature: Signature) -> Labels:
    """The labels of each output ``[labels]`` names, read from its file in the model folder; a ConfigError naming
    the key when the output or the file does not exist."""
    labels: dict[str, tuple[str, ...]] = {}
    for output, file_name in config.labels.items():
        where = f"{model_folder / CONFIG_FILE}: [labels] {output} = {file_name!r}"
        if output not in signature.output_datatypes:
            listed = ", ".join(map(repr, signature.output_name_tuple))
            raise ConfigError(f"{where}: the model has no output {output!r}; its outputs are {listed}")
        path = model_folder / file_name
        try:
            labels[output] = read_labels(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read the labels file {path}: {exc}") from None
    return labels


def load_generative(name: str, source: VersionSource, model_folder: Path, config: ModelConfig,
                    defaults: ServerDefaults) -> Loaded:
    """A language model: its engine under a generation scheduler, and a tensor face (``text_input`` →
    ``text_output``) on threads for the routes that speak tensors. Its instances run in this process always."""
    from inferd.generation.tensor_face import GenerativeRuntime

    generation = config.generation
    if config.cache.enabled and generation.temperature != 0:
        raise ConfigError(f"model {name}: [cache] enabled = true needs [generation] temperature = 0 (greedy, the "
                          f"same text for the same prompt): sampled text is never cached, and its temperature is "
                          f"{generation.temperature}")
    engine = load_engine(source.runtime, source.artifact, model_folder, config.options, generation.context,
                         generation.slots)
    limits = GenerationLimits(generation.max_tokens, config.queue.max_size or defaults.max_queue_size,
                              SamplingParams(generation.temperature, generation.top_p))
    generator = GenerationScheduler(name, engine, limits)
    runtime = GenerativeRuntime(name, generator)
    executor = ThreadExecutor(name, runtime, generation.slots, timeout_s=execution_timeout(config, defaults))
    policy = scheduling_policy(config, runtime.signature, defaults)
    log.info("model %s version %d: generative (%s), %d slots of %d tokens", name, source.version,
             source.runtime.name, generation.slots, generation.context)
    return Loaded(runtime.signature, executor, Scheduler(name, executor, policy, output_check(runtime.signature)),
                  runtime, None, generator=generator)


def execution_timeout(config: ModelConfig, defaults: ServerDefaults) -> float:
    """The longest one call of the model may run (0: no limit): model.toml first, then the server's setting."""
    own = config.instances.execution_timeout_s
    return defaults.execution_timeout_s if own is None else own


def output_check(signature: Signature) -> OutputCheck:
    """What the scheduler checks a model call's outputs with: the signature's names, ranks and datatypes and,
    for a batched model, one row per input row."""
    batched = signature.batched

    def check(outputs: Mapping[str, np.ndarray], rows: int) -> Mapping[str, np.ndarray]:
        return check_outputs(signature, outputs, rows if batched else None)

    return check


def scheduling_policy(config: ModelConfig, signature: Signature, defaults: ServerDefaults,
                      runtime_batches: bool = False, columns_are_rows: bool = False) -> SchedulingPolicy:
    """The model's scheduling: model.toml first, then the server's settings, then the runtime's default
    (``runtime_batches``) for dynamic batching.

    The runtime's default applies only when every input has a dimension beyond the first: a free first
    dimension of a one-dimensional input is as likely a sequence (token ids) as a batch, and stacking two
    requests' sequences would mix them silently; unless the runtime knows its one-dimensional inputs are rows
    (``columns_are_rows``: the embeddings runtime's ``text``, one string per row)."""
    own = config.max_batch_size
    max_batch = (defaults.max_batch_size if own is None else own) if signature.batched else 0
    by_default = runtime_batches and (columns_are_rows or all(len(spec.shape) >= 2 for spec in signature.inputs))
    batching = next(b for b in (config.batching.enabled, defaults.dynamic_batching, by_default) if b is not None)
    levels = config.queue.priority_levels
    return SchedulingPolicy(
        max_batch_size=max_batch,
        # only a model with a batch dimension can be stacked; a decoupled model's requests each run alone
        dynamic_batching=bool(batching and max_batch) and not config.model_transaction_policy.decoupled,
        max_queue_delay_us=(config.batching.max_queue_delay_us if config.batching.max_queue_delay_us is not None
                            else defaults.max_queue_delay_us),
        preferred_batch_sizes=tuple(sorted(config.batching.preferred_batch_sizes)),
        max_queue_size=config.queue.max_size or defaults.max_queue_size,
        default_timeout_us=config.queue.timeout_us,
        priority_levels=levels,
        default_priority=config.queue.default_priority or (levels + 1) // 2,
    )
