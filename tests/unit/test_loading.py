"""A model's scheduling policy: model.toml first, then the server's settings, then the runtime's default."""

from __future__ import annotations

import pytest

from inferd.config import BatchingConfig, InstancesConfig, ModelConfig
from inferd.loading import ServerDefaults, execution_timeout, scheduling_policy
from inferd.runtimes.registry import RUNTIMES
from inferd.settings import ServerSettings
from inferd.signature import Signature, TensorSpec

BATCHED = Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1,)),))
FIXED = Signature((TensorSpec("x", "FP32", (1, 4)),), (TensorSpec("y", "FP32", (1,)),))


def test_onnx_models_batch_by_default_with_no_queue_delay():
    policy = scheduling_policy(ModelConfig(), BATCHED, ServerSettings().model_defaults(),
                               RUNTIMES["onnx"].batches_by_default)
    assert policy.dynamic_batching
    assert policy.max_queue_delay_us == 0


@pytest.mark.parametrize("runtime", ["sklearn", "xgboost", "lightgbm", "torch", "python"])
def test_other_runtimes_do_not_batch_unless_asked(runtime):
    defaults = ServerSettings().model_defaults()
    assert not scheduling_policy(ModelConfig(), BATCHED, defaults, RUNTIMES[runtime].batches_by_default).dynamic_batching
    asked = ModelConfig(batching=BatchingConfig(enabled=True))
    assert scheduling_policy(asked, BATCHED, defaults, RUNTIMES[runtime].batches_by_default).dynamic_batching


def test_server_setting_and_model_toml_override_the_runtime_default():
    off = ServerDefaults(dynamic_batching=False)
    assert not scheduling_policy(ModelConfig(), BATCHED, off, runtime_batches=True).dynamic_batching
    on_here = ModelConfig(batching=BatchingConfig(enabled=True, max_queue_delay_us=500))
    policy = scheduling_policy(on_here, BATCHED, off, runtime_batches=True)
    assert policy.dynamic_batching
    assert policy.max_queue_delay_us == 500
    off_here = ModelConfig(batching=BatchingConfig(enabled=False))
    assert not scheduling_policy(off_here, BATCHED, ServerDefaults(dynamic_batching=True), True).dynamic_batching


def test_a_model_without_a_batch_dimension_never_batches():
    policy = scheduling_policy(ModelConfig(batching=BatchingConfig(enabled=True)), FIXED, ServerDefaults(), True)
    assert not policy.dynamic_batching
    assert policy.max_batch_size == 0


def test_a_one_dimensional_input_is_not_batched_by_default():
    """[-1] may be a sequence of tokens: stacking two requests would mix them, so only asking batches it."""
    tokens = Signature((TensorSpec("ids", "INT64", (-1,)),), (TensorSpec("y", "FP32", (-1,)),))
    assert not scheduling_policy(ModelConfig(), tokens, ServerDefaults(), runtime_batches=True).dynamic_batching
    asked = ModelConfig(batching=BatchingConfig(enabled=True))
    assert scheduling_policy(asked, tokens, ServerDefaults(), runtime_batches=True).dynamic_batching


def test_execution_timeout_comes_from_model_toml_then_the_server():
    assert execution_timeout(ModelConfig(), ServerDefaults()) == 60.0
    assert execution_timeout(ModelConfig(), ServerSettings(execution_timeout_s=5).model_defaults()) == 5.0
    own = ModelConfig(instances=InstancesConfig(execution_timeout_s=0.0))  # 0: no limit, whatever the server says
    assert execution_timeout(own, ServerDefaults(execution_timeout_s=5)) == 0.0


def test_max_batch_size_zero_is_no_batch_dimension_and_unset_is_the_servers_default():
    column = Signature((TensorSpec("s", "BYTES", (-1,)),), (TensorSpec("o", "BYTES", (-1,)),))
    assert column.batched
    assert scheduling_policy(ModelConfig(), column, ServerDefaults()).max_batch_size == 4096
    none = ModelConfig(max_batch_size=0)
    unbatched = column.without_batch()
    assert not unbatched.batched
    assert unbatched.column_inputs == ()  # [n, 1] is no longer another form of [n]
    policy = scheduling_policy(none, unbatched, ServerDefaults(dynamic_batching=True), runtime_batches=True)
    assert (policy.max_batch_size, policy.dynamic_batching) == (0, False)
