"""Triton's names for things that the V2 protocol leaves to the server: the model configuration's JSON form."""

from __future__ import annotations

from typing import Any

from inferd.inference import ConfigTensor, ModelConfiguration
from inferd.sequence_config import SequenceBatchingConfig

TRITON_DATA_TYPE: dict[str, str] = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
    "BF16": "TYPE_BF16",
}


def config_to_json(config: ModelConfiguration) -> dict[str, Any]:
    """The model configuration in Triton's JSON form, which perf_analyzer reads."""
    found = {
        "name": config.name,
        "platform": config.platform,
        "backend": config.platform,
        "max_batch_size": config.max_batch_size,
        "input": [{**_tensor(t), "format": t.format, "is_shape_tensor": False, "allow_ragged_batch": False,
                   "optional": False} for t in config.inputs],
        "output": [{**_tensor(t), "is_shape_tensor": False} for t in config.outputs],
        "model_transaction_policy": {"decoupled": config.decoupled},
    }
    batching = config.dynamic_batching
    if batching is not None:
        found["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
            "priority_levels": batching.priority_levels,
            "default_priority_level": batching.default_priority,
        }
    if config.sequence_batching is not None:
        found["sequence_batching"] = sequence_batching_to_json(config.sequence_batching)
    return found


def sequence_batching_to_json(config: SequenceBatchingConfig) -> dict[str, Any]:
    """``[sequence_batching]`` as Triton's ``sequence_batching`` section (one ``control`` per control input)."""
    strategy: dict[str, Any] = {"max_queue_delay_microseconds": config.max_queue_delay_microseconds}
    if config.strategy == "oldest":
        strategy.update(max_candidate_sequences=config.max_candidate_sequences or 1024,
                        preferred_batch_size=list(config.preferred_batch_sizes), preserve_ordering=False)
    else:
        strategy["minimum_slot_utilization"] = 0.0
    controls = []
    for control in config.control_input:
        kind: dict[str, Any] = {"kind": control.kind}
        if control.datatype is not None:
            kind["data_type"] = TRITON_DATA_TYPE[str(control.datatype)]
        for key in ("int32_false_true", "fp32_false_true", "bool_false_true"):
            if getattr(control, key) is not None:
                kind[key] = list(getattr(control, key))
        controls.append({"name": control.name, "control": [kind]})
    states = [{"input_name": s.input_name, "output_name": s.output_name, "data_type": TRITON_DATA_TYPE[s.datatype],
               "dims": list(s.shape), "initial_state": [], "use_same_buffer_for_input_output": False,
               "use_growable_memory": False} for s in config.state]
    return {"max_sequence_idle_microseconds": config.max_sequence_idle_microseconds, config.strategy: strategy,
            "control_input": controls, "state": states, "iterative_sequence": False}


def _tensor(tensor: ConfigTensor) -> dict[str, Any]:
    found: dict[str, Any] = {"name": tensor.name, "data_type": TRITON_DATA_TYPE[tensor.datatype],
                             "dims": list(tensor.dims)}
    if tensor.reshape is not None:
        found["reshape"] = {"shape": list(tensor.reshape)}
    return found
